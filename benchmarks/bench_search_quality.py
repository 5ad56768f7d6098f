"""Does a study beat the paper's hand grid at the same compute?

    python benchmarks/bench_search_quality.py [--settings sym0.2 sym0.4 sym0.6] [--seeds 2]

On MNIST-1D with symmetric label noise (60-epoch trials), every method gets the compute of
the paper's grid: 16 DM points and CE at full budget, 17 x 60 = 1020 epochs.
  grid:     the 17 points, no early stopping; it picks the best final validation accuracy.
  random:   a study with the random sampler and no early stopping, DM in its default ranges,
            CE as the reference, budget_epochs 1020.
  tpe:      a study with TPE and the default early stopping, DM in the default coordinates
            and ranges, CE as the reference, budget_epochs 1020, no warm start.
  tpe-other-coords: tpe with DM searched in the other coordinate pair.
  default:  a study with every shipped default (tpe plus warm_start: the paper's DM settings
            that fall inside the space run first; family budgets by coordinates; the top 3
            raced on a new seed, out of the same budget), budget_epochs 1020.
  previous: default as it was before racing: the best single run's last epoch crowned, and
            the sampler alone choosing the family.
Studies search the families given by --families (dm and gce, as the shipped quickstart).
The searches run as real studies (Ray Tune + Optuna, 2 trials at a time on this machine), once
per search seed. Each method's chosen EDF is retrained on the full training set (no validation
split) with 2 seeds; the table prints final test accuracy, mean ± std over search seeds and
retrain seeds, the epochs each method trained, and its wall time (the grid's: its runs' times
halved, as two run at a time).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _pool import BASE_CONFIG, EPOCHS, Job, base_overrides, run_jobs
from bench_fidelity import PAPER_GRID

from dm_search.driver.runner import run_study
from dm_search.edf import get as edf_family
from dm_search.study import families as spec_mod
from dm_search.study.spec import StudySpec
from dm_search.training.config import load_trial_config

BUDGET = len(PAPER_GRID) * EPOCHS


def _other_coords() -> dict[str, Any]:
    if spec_mod.DEFAULT_COORDS == "mode_spread":
        r = edf_family("dm").moment_ranges or {}
        return {"mean": list(r["mean"]), "std": list(r["std"])}
    r = edf_family("dm").search_ranges or {}
    return {"mode": list(r["mode"]), "spread": list(r["spread"])}


FAMILIES = ["dm"]


def study_spec(method: str, setting: str, seed: int, folder: str) -> StudySpec:
    base = load_trial_config(BASE_CONFIG, base_overrides(setting)).to_dict()
    doc: dict[str, Any] = {
        "name": f"{method}-{setting}-{seed}", "study_dir": folder, "base": base,
        "space": {"families": {f: {} for f in FAMILIES}},
        "sampler": {"name": "tpe", "seed": seed},
        "n_trials": 500, "budget_epochs": BUDGET, "max_concurrent": 2,
    }
    if method == "previous":
        doc.update(race={"enabled": False, "window": 1},
                   space={**doc["space"], "family_budget": "sampler"})
    elif method == "random":
        doc.update(sampler={"name": "random", "seed": seed}, scheduler={"name": "none"},
                   warm_start=False)
    elif method == "tpe":
        doc["warm_start"] = False
    elif method == "tpe-other-coords":
        doc.update(space={"families": {"dm": _other_coords()}}, warm_start=False)
    elif method != "default":
        raise SystemExit(f"unknown method {method!r}")
    return StudySpec.model_validate(doc)


def run_method(method: str, setting: str, seed: int, folder: str,
               ) -> tuple[dict[str, Any], int, float]:
    """(chosen EDF config, epochs trained (races included), wall seconds) of one search."""
    t0 = time.perf_counter()
    if method == "grid":
        recs = run_jobs([Job(setting, e) for e in PAPER_GRID], verbose=False)
        best = max(recs, key=lambda r: r["val_acc"][-1])
        # Two runs at a time, as the studies run.
        wall = sum(r["wall_s"] for r in recs) / 2
        return best["edf"], sum(len(r["val_acc"]) for r in recs), wall
    out = run_study(study_spec(method, setting, seed, folder), say=lambda _: None)
    best = out.summary["best"]
    import optuna

    from dm_search import storage as st

    study = optuna.load_study(study_name=out.name,
                              storage=st.open_storage(f"sqlite:///{folder}/studies.db"))
    return best["edf"], st.epochs_trained(study), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", nargs="+", default=["sym0.2", "sym0.4", "sym0.6"])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--retrain-seeds", type=int, default=2)
    ap.add_argument("--methods", nargs="+",
                    default=["grid", "random", "tpe", "tpe-other-coords", "default"])
    ap.add_argument("--families", nargs="+", default=["dm", "gce"])
    args = ap.parse_args()
    FAMILIES[:] = args.families
    folder = tempfile.mkdtemp(prefix="dm-bench-quality-")
    print(f"# default coordinates: {spec_mod.DEFAULT_COORDS}; families {args.families}; budget "
          f"{BUDGET} epochs per search (races included); {args.seeds} study (sampler) seed(s), "
          f"{args.retrain_seeds} retrain seed(s) of each pick on the full training set")
    print("| setting | method | pick per study seed | final test % per study seed | mean ± std "
          "over study seeds | worst study seed | vs grid: mean, worst (points) | epochs | "
          "wall s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for setting in args.settings:
        grid_mean: float | None = None
        for method in args.methods:
            seeds = [0] if method == "grid" else list(range(args.seeds))
            chosen, epochs, walls = [], [], []
            for seed in seeds:
                edf, ep, wall = run_method(method, setting, seed, folder)
                chosen.append(edf)
                epochs.append(ep)
                walls.append(wall)
            per_seed = []
            for e in chosen:
                recs = run_jobs([Job(setting, e, seed=100 + r, val_fraction=0.0)
                                 for r in range(args.retrain_seeds)], verbose=False)
                per_seed.append(100 * statistics.mean(_final_test(r) for r in recs))
            mean = statistics.mean(per_seed)
            sd = statistics.stdev(per_seed) if len(per_seed) > 1 else 0.0
            if method == "grid":
                grid_mean = mean
            vs = (f"{mean - grid_mean:+.1f}, {min(per_seed) - grid_mean:+.1f}"
                  if grid_mean is not None else "-")
            print(f"| {setting} | {method} | {'; '.join(_label(e) for e in chosen)} | "
                  f"{', '.join(f'{v:.1f}' for v in per_seed)} | {mean:.1f} ± {sd:.1f} | "
                  f"{min(per_seed):.1f} | {vs} | {statistics.mean(epochs):.0f} | "
                  f"{statistics.mean(walls):.0f} |", flush=True)


def _final_test(rec: dict[str, Any]) -> float:
    """A retrain's final test accuracy; one that diverged or collapsed is at chance."""
    return 0.1 if rec.get("failed") else rec["test_acc"][-1]


def _label(edf: dict[str, Any]) -> str:
    return edf["family"] + "(" + ", ".join(f"{k}={v:.3g}" for k, v in edf.items()
                                           if k != "family") + ")"


if __name__ == "__main__":
    main()
