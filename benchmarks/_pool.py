"""Full-budget training runs shared by the search benchmarks.

Each run is one EDF trained for its whole budget with no early stopping, on one of the
benchmark settings (MNIST-1D with a given label noise). Runs are deterministic on the CPU for
a given config and seed, so every finished run is kept in a JSON file keyed by its resolved
trial config: a benchmark that needs a run another benchmark already trained reads it instead
of training it again, and the per-epoch curves stay on disk for offline replays.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CURVES = HERE / "results" / "curves.json"
BASE_CONFIG = HERE.parent / "examples" / "mnist1d_dm.yaml"
EPOCHS = 60

# MNIST-1D, 1-D CNN; the same recipe as examples/mnist1d_dm.yaml, 60 epochs, no diagnostics pass.
SETTINGS: dict[str, list[str]] = {
    "sym0.2": ["data.noise.kind=symmetric", "data.noise.rate=0.2"],
    "sym0.4": ["data.noise.kind=symmetric", "data.noise.rate=0.4"],
    "sym0.6": ["data.noise.kind=symmetric", "data.noise.rate=0.6"],
    "pair0.4": ["data.noise.kind=asymmetric", "data.noise.rate=0.4", "data.noise.map=pairflip"],
}
# The same noise on 10,000 training examples (12,500 generated: 2,500 are the test set, and the
# clean validation split takes 2,000 of the 10,000), where EDFs differ more than at 4,000.
SETTINGS.update({f"10k-{name}": [*overrides, "data.num_samples=12500"]
                 for name, overrides in list(SETTINGS.items())})


def base_overrides(setting: str, epochs: int = EPOCHS) -> list[str]:
    return [*SETTINGS[setting], f"optim.epochs={epochs}", "diagnostics=false"]


@dataclass(frozen=True)
class Job:
    setting: str
    edf: dict[str, Any]
    seed: int = 0
    # The split and the noise draw; None: the same as seed. A re-evaluation keeps the study's
    # data (data_seed 0) and changes only the training seed (initialisation, shuffling).
    data_seed: int | None = None
    val_fraction: float | None = None  # 0: the final retrain on the full training set
    schedule: tuple[tuple[str, Any], ...] = ()  # loss.edf_end and loss.ramp, as items
    diagnostics: bool = False  # the per-epoch pass that measures memorisation

    def config(self) -> dict[str, Any]:
        from dm_search.study.families import loss_settings
        from dm_search.training.config import load_trial_config

        cfg = load_trial_config(BASE_CONFIG, base_overrides(self.setting)).to_dict()
        normalise, eps = loss_settings(self.edf["family"], None)
        cfg["loss"] = {"edf": dict(self.edf), **dict(self.schedule), "normalise": normalise,
                       "eps": eps}
        if self.diagnostics:
            cfg["diagnostics"] = True
        cfg["seed"] = self.seed
        cfg["data"] = {**cfg["data"],
                       "seed": self.seed if self.data_seed is None else self.data_seed}
        if self.val_fraction is not None:
            cfg["data"]["val_fraction"] = self.val_fraction
        return cfg

    def key(self) -> str:
        return json.dumps(self.config(), sort_keys=True)


def _train(job: Job) -> dict[str, Any]:
    from dm_search.training.config import TrialConfig
    from dm_search.training.trainer import TrialDiverged, run_trial

    cfg = TrialConfig.from_dict({**job.config(), "threads": 1})
    t0 = time.perf_counter()
    history: list[dict[str, float]] = []
    failed = None
    try:
        run_trial(cfg, report=history.append)
    except TrialDiverged as err:
        # A run that dies on this seed is a result: it is what racing has to catch.
        failed = f"{type(err).__name__}: {err}"
    return {
        "setting": job.setting, "edf": job.edf, "seed": job.seed, "data_seed": cfg.data.seed,
        "val_fraction": cfg.data.val_fraction,
        "val_acc": [round(m["val_acc"], 5) for m in history],
        "test_acc": [round(m["test_acc"], 5) for m in history],
        "train_loss": [round(m["train_loss"], 5) for m in history],
        "wall_s": round(time.perf_counter() - t0, 2),
        **({"failed": failed} if failed else {}),
        **({"memorised": [round(m["memorised"], 5) for m in history],
            "mode": [round(m["mode"], 5) for m in history]} if cfg.diagnostics else {}),
    }


def load_cache(path: Path = CURVES) -> dict[str, dict[str, Any]]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _save(cache: dict[str, dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cache, indent=0, sort_keys=True))
    tmp.replace(path)


def run_jobs(jobs: Iterable[Job], *, workers: int = 2, path: Path = CURVES,
             verbose: bool = True) -> list[dict[str, Any]]:
    """Train the jobs not in the cache (``workers`` processes of one thread each) and return
    every job's record, in the order given."""
    jobs = list(jobs)
    cache = load_cache(path)
    keys = [j.key() for j in jobs]
    todo = {k: j for k, j in zip(keys, jobs, strict=True) if k not in cache}
    if todo and verbose:
        print(f"# training {len(todo)} run(s) ({len(jobs) - len(todo)} cached), {workers} "
              "worker(s)", flush=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_train, j): k for k, j in todo.items()}
        for n, fut in enumerate(as_completed(futures), 1):
            rec = fut.result()
            cache[futures[fut]] = rec
            _save(cache, path)
            if verbose:
                end = rec.get("failed") or f"final val {rec['val_acc'][-1]:.4f}"
                print(f"#   {n}/{len(todo)} {rec['setting']} {rec['edf']} seed {rec['seed']}: "
                      f"{end} ({rec['wall_s']:.0f} s)", flush=True)
    return [cache[k] for k in keys]
