"""A training loop of one's own: what the TrialContext path costs, and what a study of one's
own network finds next to the built-in trainer's study on the same data.

``--part overhead`` (target: <= 1.05 per epoch). The same work three ways on MNIST-1D at 40%
symmetric noise (the 1-D CNN, SGD with the recipe's cosine schedule, DMLoss, validation and
test accuracy after every epoch): the built-in trainer (run_trial, diagnostics off), a loop of
one's own run through run_trial's TrialContext, and that loop called bare with a stand-in
context. Runs alternate, each repeat starting at another way, so that machine load hits all
alike.

``--part study``: for each sampler seed, a study of examples/own_loop.py (its own CNN without
batch norm, its own loop) and the same study through the built-in trainer and its 1-D CNN
with batch norm; then the built-in study's winner trained in the own loop (the EDF a study of
another network would have handed over), on the full training set like a final stage.

    python benchmarks/bench_own_code.py --part overhead [--epochs 10] [--repeats 3]
    python benchmarks/bench_own_code.py --part study [--seeds 0 1 2] [--out runs/bench_own]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = {"name": "mnist1d", "noise": {"kind": "symmetric", "rate": 0.4}, "val_fraction": 0.2,
        "seed": 0}
OPTIM = {"epochs": 20, "batch_size": 128, "lr": 0.05, "momentum": 0.9, "weight_decay": 1.0e-4,
         "schedule": "cosine"}


# ---------------------------------------------------------------------- overhead
def same_work(trial: Any) -> None:
    """The built-in trainer's work (diagnostics off), written as a loop of one's own."""
    d = trial.data
    model = trial.model()
    recipe = trial.recipe
    bs = recipe.batch_size
    steps = len(d.y_train) // bs
    opt = recipe.optimizer(model.parameters())
    sched = recipe.scheduler(opt, total_steps=trial.epochs * steps)
    g = torch.Generator().manual_seed(trial.seed + 1)
    for epoch in range(1, trial.epochs + 1):
        model.train()
        perm = torch.randperm(len(d.y_train), generator=g)
        for b in range(steps):
            idx = perm[b * bs:(b + 1) * bs]
            loss = trial.loss(model(d.x_train[idx]), d.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.inference_mode():
            accs = [sum(int((model(x[i:i + 1024]).argmax(1) == y[i:i + 1024]).sum())
                        for i in range(0, len(y), 1024)) / len(y)
                    for x, y in ((d.x_val, d.y_val), (d.x_test, d.y_test))]
        trial.report(epoch=epoch, val_acc=accs[0], test_acc=accs[1])


def bare_context(cfg: Any, data: Any) -> SimpleNamespace:
    """What the loop needs, without the TrialContext: the cost the context adds is the rest."""
    from dm_search.loss import DMLoss
    from dm_search.training.models import create_model
    from dm_search.training.recipe import Recipe

    def model() -> torch.nn.Module:
        torch.manual_seed(cfg.seed)
        return create_model(cfg.model.name, data.input_shape, data.num_classes)

    reports: list[dict[str, Any]] = []
    return SimpleNamespace(
        data=data, model=model, recipe=Recipe.from_config(cfg.optim, cfg.optim.epochs),
        epochs=cfg.optim.epochs, seed=cfg.seed, loss=DMLoss(cfg.loss.build_edf()),
        report=lambda **m: reports.append(m))


def overhead(epochs: int, repeats: int) -> None:
    from dm_search.common import plugins
    from dm_search.training.config import TrialConfig
    from dm_search.training.data import prepare_data
    from dm_search.training.trainer import run_trial

    torch.set_num_threads(1)
    base = {"data": DATA, "model": {"name": "cnn1d"}, "diagnostics": False, "threads": 1,
            "loss": {"edf": {"family": "dm", "lam": 0.5, "beta": 8.0}},
            "optim": {**OPTIM, "epochs": epochs}}
    builtin = TrialConfig.from_dict(base)
    plugins.provide("bench_own_code:same_work", same_work)
    own = TrialConfig.from_dict({**base, "trainer": "bench_own_code:same_work"})
    data = prepare_data(builtin.data)
    ways = {
        "built-in trainer": lambda: run_trial(builtin, data=data),
        "own loop, TrialContext": lambda: run_trial(own, data=data),
        "own loop, bare": lambda: same_work(bare_context(builtin, data)),
    }
    times: dict[str, list[float]] = {k: [] for k in ways}
    accs: dict[str, float] = {}
    run_trial(builtin.model_copy(update={"optim": builtin.optim.model_copy(
        update={"epochs": 1})}), data=data)  # warm-up: first-call costs out of the timings
    names = list(ways)
    for rep in range(repeats):
        # Each repeat starts at another way: no way always runs first, or right after another.
        for name in names[rep % 3:] + names[:rep % 3]:
            fn = ways[name]
            t0 = time.perf_counter()
            result = fn()
            times[name].append((time.perf_counter() - t0) / epochs)
            if result is not None:
                accs[name] = result.final["test_acc"]
    print(f"# machine: {platform.node()} {platform.machine()}, {torch.get_num_threads()} "
          f"thread(s), torch {torch.__version__}, python {platform.python_version()}")
    print(f"# MNIST-1D 3200 train / 800 val / 1000 test, 40% sym noise, cnn1d, {epochs} epochs, "
          f"{repeats} runs each (alternating); seconds per epoch, median")
    ref = statistics.median(times["built-in trainer"])
    print(f"{'way':<26} {'s/epoch':>8} {'min':>8} {'max':>8} {'ratio':>7} {'final test':>10}")
    for name, ts in times.items():
        med = statistics.median(ts)
        acc = f"{accs[name]:.3f}" if name in accs else "-"
        print(f"{name:<26} {med:8.4f} {min(ts):8.4f} {max(ts):8.4f} {med / ref:7.3f} {acc:>10}")
    ctx = statistics.median(times["own loop, TrialContext"])
    bare = statistics.median(times["own loop, bare"])
    print(f"TrialContext path / built-in trainer: {ctx / ref:.3f} (target <= 1.05)")
    print(f"TrialContext path / the same loop bare: {ctx / bare:.3f}")


# ---------------------------------------------------------------------- study
def _builtin_spec(seed: int, out: Path) -> Path:
    import yaml

    sys.path.insert(0, str(ROOT / "examples"))
    from own_loop import SPEC

    spec = {**SPEC, "name": f"builtin-s{seed}", "study_dir": str(out),
            "sampler": {**SPEC["sampler"], "seed": seed},
            "base": {"data": DATA, "model": {"name": "cnn1d"}, "optim": OPTIM,
                     "diagnostics": False}}
    path = out / f"builtin-s{seed}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _final(url: str, name: str) -> dict[str, Any]:
    import optuna

    from dm_search import storage as st

    study = optuna.load_study(study_name=name, storage=url)
    best = st.best_trial(study)
    final = st.final_stage(study) or {}
    assert best is not None
    cfg = st.trial_config(best)
    return {"edf": st.trial_edf(best), "loss": cfg["loss"], "optim": cfg["optim"],
            "best": final["best"]["test_acc_mean"], "best_std": final["best"]["test_acc_std"],
            "ce": final["ce"]["test_acc_mean"], "trials": len(study.trials)}


def transfer(loss: dict[str, Any], optim: dict[str, Any], seeds: int = 2) -> list[float]:
    """The EDF (with its normalisation: a loss-equivalent family such as GCE is searched as the
    plain loss) and recipe another network's study chose, trained in the own loop on the full
    training set (test accuracy per seed)."""
    sys.path.insert(0, str(ROOT / "examples"))
    from dm_search.training.config import TrialConfig
    from dm_search.training.trainer import run_trial

    out = []
    for s in range(seeds):
        cfg = TrialConfig.from_dict({"trainer": "own_loop:train", "seed": s,
                                     "data": {**DATA, "val_fraction": 0.0},
                                     "loss": loss, "optim": optim,
                                     "params": {"width": 32}})
        out.append(run_trial(cfg, final=True).final["test_acc"])
    return out


def study(seeds: list[int], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{out}/studies.db"
    rows = []
    previous = {r["seed"]: r for r in json.loads((out / "bench_own_code.json").read_text())} \
        if (out / "bench_own_code.json").is_file() else {}
    for seed in seeds:
        # Studies already in --out are read, not run again (their wall times are kept).
        own_s, builtin_s = previous.get(seed, {}).get("own_s"), previous.get(seed, {}).get(
            "builtin_s")
        if own_s is None:
            t0 = time.perf_counter()
            subprocess.run([sys.executable, str(ROOT / "examples" / "own_loop.py"), "--name",
                            f"own-s{seed}", "--seed", str(seed), "--study-dir", str(out)],
                           check=True, capture_output=True, text=True)
            own_s = time.perf_counter() - t0
        if builtin_s is None:
            t0 = time.perf_counter()
            subprocess.run([str(Path(sys.executable).parent / "dm-search"), "submit",
                            str(_builtin_spec(seed, out))], check=True, capture_output=True,
                           text=True)
            builtin_s = time.perf_counter() - t0
        own, builtin = _final(url, f"own-s{seed}"), _final(url, f"builtin-s{seed}")
        moved = transfer(builtin["loss"], builtin["optim"])
        rows.append({"seed": seed, "own": own, "builtin": builtin, "own_s": own_s,
                     "builtin_s": builtin_s, "transfer": moved})
        print(json.dumps(rows[-1]), flush=True)
    (out / "bench_own_code.json").write_text(json.dumps(rows, indent=1))
    print(f"# machine: {platform.node()} {platform.machine()}, torch {torch.__version__}")
    print("# final-stage test accuracy (full training set, 2 seeds each), MNIST-1D 40% sym")
    print(f"{'seed':>4} {'own loop: winner':<26} {'best':>6} {'CE':>6} | "
          f"{'built-in: winner':<26} {'best':>6} {'CE':>6} | {'built-in winner in own loop':>12}")

    def label(r: dict[str, Any]) -> str:
        e = r["edf"]
        return ",".join(f"{k}={v:.3g}" if isinstance(v, float) else str(v)
                        for k, v in e.items())[:26]

    for r in rows:
        o, b = r["own"], r["builtin"]
        print(f"{r['seed']:>4} {label(o):<26} {o['best']:6.3f} {o['ce']:6.3f} | "
              f"{label(b):<26} {b['best']:6.3f} {b['ce']:6.3f} | "
              f"{statistics.mean(r['transfer']):12.3f}")

    def mean_sd(xs: list[float]) -> str:
        return f"{statistics.mean(xs):.3f} +- {statistics.stdev(xs) if len(xs) > 1 else 0:.3f}"

    print(f"mean over {len(rows)} seeds: own loop best {mean_sd([r['own']['best'] for r in rows])}"
          f", its CE {mean_sd([r['own']['ce'] for r in rows])}; built-in best "
          f"{mean_sd([r['builtin']['best'] for r in rows])}, its CE "
          f"{mean_sd([r['builtin']['ce'] for r in rows])}; built-in winner in the own loop "
          f"{mean_sd([statistics.mean(r['transfer']) for r in rows])}")
    print(f"study wall time: own loop {statistics.mean(r['own_s'] for r in rows):.0f} s, "
          f"built-in {statistics.mean(r['builtin_s'] for r in rows):.0f} s (mean)")
    if any(math.isnan(r["own"]["best"]) for r in rows):
        raise SystemExit("a study had no final stage")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["overhead", "study"], required=True)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", type=Path, default=Path("runs/bench_own"))
    args = p.parse_args()
    if args.part == "overhead":
        overhead(args.epochs, args.repeats)
    else:
        study(args.seeds, args.out.resolve())


if __name__ == "__main__":
    main()
