"""How sensitive is DM to the learning rate, and what widens its stable range?

(a) Sensitivity: CE and DM EDFs trained at learning rates 0.0125 to 0.4 (cosine schedule,
    SGD momentum 0.9) on MNIST-1D (1-D CNN, 40 epochs) and scikit-learn's digits (MLP,
    100 epochs), 40% symmetric noise, on the full training set, test accuracy over seeds.
    A network that dies counts as collapsed (the trainer's TrialCollapsed).
(b) Saturation: the same DM EDF with eps 5e-7 (the default), 1e-2 and 1e-1. eps changes only
    how fast an example's push fades as p -> 1 ((1 - p) / ((1 - p) + eps)), so the EDF as
    configured keeps its exact gradient contract; does a larger eps widen the stable lr range
    without costing accuracy?
(c) Joint lr search: the quickstart study (20 trials, 30 epochs) with and without
    `optim.lr` in the search space, compared on the final retrain (best EDF vs CE) and on the
    lr range over which the best EDF beats CE.

    python benchmarks/bench_lr.py [--seeds 2] [--skip-studies]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LRS = (0.0125, 0.025, 0.05, 0.1, 0.2, 0.4)
LOSSES: dict[str, dict[str, Any]] = {
    "CE": {"edf": {"family": "cce"}, "normalise": "none", "eps": 0.0},
    "DM(1,16)": {"edf": {"family": "dm", "lam": 1.0, "beta": 16.0}, "normalise": "batch",
                 "eps": 5e-7},
    "DM(1,20)": {"edf": {"family": "dm", "lam": 1.0, "beta": 20.0}, "normalise": "batch",
                 "eps": 5e-7},
    "DM(1,20) eps 1e-2": {"edf": {"family": "dm", "lam": 1.0, "beta": 20.0},
                          "normalise": "batch", "eps": 1e-2},
    "DM(1,20) eps 1e-1": {"edf": {"family": "dm", "lam": 1.0, "beta": 20.0},
                          "normalise": "batch", "eps": 1e-1},
}
DATASETS: dict[str, dict[str, Any]] = {
    "mnist1d": {"data": {"name": "mnist1d"}, "model": {"name": "cnn1d"},
                "optim": {"epochs": 40, "batch_size": 128}},
    "digits": {"data": {"name": "digits"}, "model": {"name": "mlp"},
               "optim": {"epochs": 100, "batch_size": 64}},
}


def _config(dataset: str, loss: str, lr: float, seed: int) -> dict[str, Any]:
    d = DATASETS[dataset]
    return {
        "data": {**d["data"], "noise": {"kind": "symmetric", "rate": 0.4}, "val_fraction": 0.0,
                 "seed": seed},
        "model": d["model"],
        "loss": LOSSES[loss],
        "optim": {**d["optim"], "lr": lr, "momentum": 0.9, "schedule": "cosine"},
        "seed": seed,
        "diagnostics": False,
        "threads": 1,
    }


def _run(job: tuple[str, str, float, int]) -> tuple[tuple[str, str, float, int], float | None]:
    from dm_search.training.config import TrialConfig
    from dm_search.training.trainer import TrialDiverged, run_trial

    try:
        r = run_trial(TrialConfig.from_dict(_config(*job)))
    except TrialDiverged:  # TrialCollapsed too: the network is dead or diverged
        return job, None
    return job, float(r.final["test_acc"])


def _cell(accs: list[float | None]) -> str:
    alive = [a for a in accs if a is not None]
    dead = len(accs) - len(alive)
    if not alive:
        return f"collapsed ({dead}/{len(accs)})"
    text = f"{100 * statistics.mean(alive):.1f}"
    return text + (f" ({dead}/{len(accs)} collapsed)" if dead else "")


def _mean(accs: list[float | None]) -> float:
    # A collapsed run counts at chance: it is what the user would have been left with.
    return statistics.mean(a if a is not None else 0.1 for a in accs)


def sensitivity(seeds: int) -> None:
    jobs = [(ds, loss, lr, s) for ds in DATASETS for loss in LOSSES for lr in LRS
            for s in range(seeds)]
    t0 = time.perf_counter()
    results: dict[tuple[str, str, float], list[float | None]] = {}
    with ProcessPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        for (ds, loss, lr, _), acc in pool.map(_run, jobs):
            results.setdefault((ds, loss, lr), []).append(acc)
    print(f"(a)+(b) {len(jobs)} runs in {time.perf_counter() - t0:.0f} s; test accuracy % "
          f"(mean of {seeds} seeds), full training set, 40% symmetric noise")
    for ds in DATASETS:
        print(f"\n{ds}\n| loss | " + " | ".join(f"lr {lr:g}" for lr in LRS)
              + " | best | lr range within 3 points of its best | beats CE at |")
        print("|---" * (len(LRS) + 4) + "|")
        ce = {lr: _mean(results[(ds, "CE", lr)]) for lr in LRS}
        for loss in LOSSES:
            means = {lr: _mean(results[(ds, loss, lr)]) for lr in LRS}
            best = max(means.values())
            near = [lr for lr in LRS if means[lr] >= best - 0.03]
            wins = [f"{lr:g}" for lr in LRS if loss != "CE" and means[lr] > ce[lr]]
            print(f"| {loss} | " + " | ".join(_cell(results[(ds, loss, lr)]) for lr in LRS)
                  + f" | {100 * best:.1f} | {min(near):g} to {max(near):g} "
                  f"(x{max(near) / min(near):g}) | {', '.join(wins) or '-'} |")


def studies() -> None:
    import optuna

    from dm_search import storage as st
    from dm_search.driver.runner import run_study
    from dm_search.study.reading import load_spec

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder = Path(tempfile.mkdtemp(prefix="bench-lr-"))
    quick = HERE.parent / "search_spaces" / "quickstart.yaml"
    print("\n(c) quickstart study, with and without optim.lr in the space (TPE seed 0)")
    print("| space | best EDF | its lr | val acc | final test (best vs CE) | beats CE for lr "
          "| wall s |")
    print("|---|---|---|---|---|---|---|")
    for label, extra in (("EDF only (shipped)", {}),
                         ("EDF + lr in [0.01, 0.2] (log)",
                          {"optim.lr": {"low": 0.01, "high": 0.2, "log": True}})):
        spec = load_spec(quick)
        space = spec.space.model_dump(mode="json")
        space["params"] = {**space.get("params", {}), **extra}
        spec = type(spec).model_validate({**spec.model_dump(mode="json"), "space": space,
                                          "name": f"lr-{len(extra)}",
                                          "study_dir": str(folder)})
        t0 = time.perf_counter()
        out = run_study(spec, say=lambda msg: None)
        wall = time.perf_counter() - t0
        s = out.summary
        final = s["final_stage"] or {}
        from dm_search.common.labels import lr_range
        from dm_search.edf import EDF

        span = lr_range(final)
        best = s["best"]
        study = optuna.load_study(study_name=spec.name,
                                  storage=st.open_storage(st.resolve_url(None, spec)))
        lr = st.trial_config(st.best_trial(study))["optim"]["lr"]
        print(f"| {label} | {EDF.from_config(best['edf'])} | {lr:.3g} | "
              f"{best['value']:.4f} | {100 * final['best']['test_acc_mean']:.1f} vs "
              f"{100 * final['ce']['test_acc_mean']:.1f} | "
              f"{f'{span[0]:g} to {span[1]:g}' if span else 'none'} | {wall:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--skip-studies", action="store_true")
    args = ap.parse_args()
    import torch

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, torch {torch.__version__}")
    sensitivity(args.seeds)
    if not args.skip_studies:
        studies()


if __name__ == "__main__":
    main()
