"""Search orchestration: parallel speed-up, per-trial overhead and Ray start-up.

(a) The same 8 short trials (MNIST-1D, 1-D CNN, no early stopping, random sampler with a fixed
    seed) as a study at concurrency 1 and at concurrency 2, 1 CPU per trial, on this machine:
    speed-up = search wall time at 1 / at 2 (target >= 1.7x on 2 CPUs).
(b) Orchestration overhead per trial = the trial's wall time seen by the driver (start to
    completion) minus its training time (the sum of its epoch times): median over trials after
    the first (target <= 0.3 s).
(c) Ray start-up: ray.init of a local instance.
(d) The sampler's time per trial: one call of the define-by-run function the study hands to
    Ray Tune (suggest, record the trial's config, look for a twin, and whatever else it does
    before the trial can start), median of 8 calls on a fresh study.

    python benchmarks/bench_search.py [--trials 8] [--epochs 8] [--runs 1]

With --runs N, the two concurrencies alternate N times; the table shows the median of the runs'
wall times and speed-ups, and the overheads pooled over the runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import optuna

from dm_search import storage as st
from dm_search.driver.cluster import connect_ray
from dm_search.driver.runner import run_study
from dm_search.study.spec import StudySpec


def _spec(name: str, folder: Path, trials: int, epochs: int, concurrency: int) -> StudySpec:
    return StudySpec.model_validate({
        "name": name,
        "study_dir": str(folder),
        "base": {"data": {"name": "mnist1d", "num_samples": 2000,
                          "noise": {"kind": "symmetric", "rate": 0.4}},
                 "model": {"name": "cnn1d"}, "optim": {"epochs": epochs, "batch_size": 128},
                 "diagnostics": False},
        "space": {"families": {"dm": {}}},
        "sampler": {"name": "random", "seed": 0},
        "scheduler": {"name": "none"},
        "n_trials": trials,
        "max_concurrent": concurrency,
        "resources": {"cpu": 1},
    })


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder = Path(tempfile.mkdtemp(prefix="bench-search-"))
    t0 = time.perf_counter()
    connect_ray(None)
    ray_start = time.perf_counter() - t0

    walls: dict[int, list[float]] = {1: [], 2: []}
    overheads: dict[int, list[float]] = {1: [], 2: []}
    for run in range(args.runs):
        for conc in (1, 2):
            spec = _spec(f"c{conc}-{run}", folder, args.trials, args.epochs, conc)
            out = run_study(spec, say=lambda _m: None)
            study = optuna.load_study(study_name=spec.name,
                                      storage=st.open_storage(st.resolve_url(None, spec)))
            train = {t.number: sum(h["epoch_s"] for h in st.trial_history(study, t))
                     for t in study.trials}
            first = min(out.trial_wall_s)
            overheads[conc] += [out.trial_wall_s[n] - train[n] for n in sorted(out.trial_wall_s)
                                if n != first]
            walls[conc].append(out.search_s)
    rows = {conc: statistics.median(w) for conc, w in walls.items()}
    speedups = [a / b for a, b in zip(walls[1], walls[2], strict=True)]
    speedup = statistics.median(speedups)
    suggest = _sampler_time(_spec("suggest", folder, args.trials, args.epochs, 1), folder)
    print(f"# {platform.machine()}, {len(os.sched_getaffinity(0))} CPUs; "
          f"{args.trials} trials of {args.epochs} epochs (MNIST-1D, 1-D CNN, 1 CPU each); "
          f"{args.runs} run(s), medians")
    print("| measure | value |")
    print("| --- | --- |")
    print(f"| search wall time, concurrency 1 | {rows[1]:.1f} s |")
    print(f"| search wall time, concurrency 2 | {rows[2]:.1f} s |")
    print(f"| speed-up (target >= 1.7), per run | {speedup:.2f}x "
          f"({', '.join(f'{x:.2f}' for x in speedups)}) |")
    for conc in (1, 2):
        o = overheads[conc]
        print(f"| overhead per trial after the first, concurrency {conc}: median (min-max) "
              f"(target <= 0.3 s) | {statistics.median(o):.2f} s ({min(o):.2f}-{max(o):.2f}) |")
    print(f"| Ray start-up (local ray.init) | {ray_start:.1f} s |")
    print(f"| sampler (define-by-run) time per trial, median of {len(suggest)} "
          f"(min-max) | {statistics.median(suggest):.3f} s "
          f"({min(suggest):.3f}-{max(suggest):.3f}) |")


def _sampler_time(spec: StudySpec, folder: Path, calls: int = 8) -> list[float]:
    from optuna.artifacts import FileSystemArtifactStore

    from dm_search.driver import rendering
    from dm_search.study.space import make_space

    (folder / "artifacts").mkdir(exist_ok=True)
    study = optuna.create_study(storage=f"sqlite:///{folder}/suggest.db", direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    define = rendering.RecordingSpace(make_space(spec),
                                       FileSystemArtifactStore(str(folder / "artifacts")))
    times = []
    for _ in range(calls):
        trial = study.ask()
        t0 = time.perf_counter()
        define(trial)
        times.append(time.perf_counter() - t0)
        rendering.render_done(trial.number)  # what the study waits for before the trial ends
        study.tell(trial, 0.5)
    return times


if __name__ == "__main__":
    main()
