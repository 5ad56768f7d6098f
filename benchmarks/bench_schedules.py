"""Do emphasis schedules beat the best fixed EDF at the same search budget?

    python benchmarks/bench_schedules.py [--settings sym0.4 sym0.6 pair0.4] [--seeds 2]
                                         [--retrain-seeds 3] [--budget 1020]

On MNIST-1D (60-epoch trials) under each noise setting, two real studies (Ray Tune + Optuna,
2 trials at a time, every shipped default: TPE, the rung early stopping, the paper's points
first, CE as the reference) get the same budget in epochs:
  fixed:     DM searched in (mode, spread), the default ranges;
  schedule:  the same, plus where the emphasis ends (mode_end in the mode range) and the ramp's
             shape (linear or cosine over the whole budget). A fixed EDF is the special case
             mode_end = mode: the paper's points run as such first.
Each study's best full-budget trial is retrained on the full training set (no validation
split) with --retrain-seeds seeds, with the memorisation pass on; so is the schedule study's
best trial whose EDF actually moves, when its overall best is a fixed EDF. The table prints
the final test accuracy and the share of corrupted labels memorised at the end (mean ± std
over search seeds and retrain seeds). With --hand, two unsearched rows are added: the schedule
the learning curves suggest (dm lam 2, fast but memorising, moving linearly to dm lam 1, slow
but robust; beta 16) and that end point fixed (the paper's grid's best here).

The chosen configs are written to --chosen; --redraw retrains (from the run cache) and prints
them again without searching. With --figure, the retrains' test accuracy and memorisation
curves are drawn per setting.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _pool import BASE_CONFIG, EPOCHS, HERE, Job, base_overrides, run_jobs

from dm_search import storage as st
from dm_search.common.labels import loss_label
from dm_search.driver.runner import run_study
from dm_search.edf import get as edf_family
from dm_search.study.spec import StudySpec
from dm_search.training.config import load_trial_config

HAND: dict[str, dict[str, Any]] = {
    "hand: lam 2 -> lam 1": {"edf": {"family": "dm", "lam": 2.0, "beta": 16.0},
                             "edf_end": {"family": "dm", "lam": 1.0, "beta": 16.0},
                             "ramp": {"shape": "linear", "start": 0.0, "end": 1.0,
                                      "coords": "mode_spread"}},
    "hand: lam 1 fixed": {"edf": {"family": "dm", "lam": 1.0, "beta": 16.0}},
}
SPACES: dict[str, dict[str, Any]] = {
    "fixed": {"dm": {}},
    "schedule": {"dm": {"mode_end": list((edf_family("dm").search_ranges or {})["mode"]),
                        "ramp": ["linear", "cosine"]}},
}


def study_spec(method: str, setting: str, seed: int, folder: str, budget: int) -> StudySpec:
    base = load_trial_config(BASE_CONFIG, base_overrides(setting)).to_dict()
    return StudySpec.model_validate({
        "name": f"{method}-{setting}-{seed}", "study_dir": folder, "base": base,
        "space": {"families": SPACES[method]}, "sampler": {"name": "tpe", "seed": seed},
        "n_trials": 500, "budget_epochs": budget, "max_concurrent": 2})


def search(method: str, setting: str, seed: int, folder: str, budget: int,
           ) -> tuple[list[dict[str, Any]], int, float, int]:
    """(the loss configs to retrain: the best, and the best moving schedule where the best is
    fixed; epochs trained; wall seconds; trials whose EDF moved)."""
    import optuna

    t0 = time.perf_counter()
    out = run_study(study_spec(method, setting, seed, folder, budget), say=lambda _: None)
    study = optuna.load_study(study_name=out.name,
                              storage=st.open_storage(f"sqlite:///{folder}/studies.db"))
    eligible = sorted((t for t in study.get_trials(deepcopy=False) if st.is_eligible(t)),
                      key=lambda t: (-t.value, t.number))
    moving = [t for t in study.get_trials(deepcopy=False) if st.trial_schedule(t)]
    chosen = [eligible[0]]
    if method == "schedule" and st.trial_schedule(eligible[0]) is None:
        chosen += [t for t in eligible if st.trial_schedule(t)][:1]
    losses = [{"edf": st.trial_edf(t), **(st.trial_schedule(t) or {})} for t in chosen]
    return losses, st.epochs_trained(study), time.perf_counter() - t0, len(moving)


def retrain(setting: str, loss: dict[str, Any], seeds: int) -> list[dict[str, Any]]:
    schedule = tuple((k, loss[k]) for k in ("edf_end", "ramp") if k in loss)
    jobs = [Job(setting, loss["edf"], seed=100 + r, val_fraction=0.0, schedule=schedule,
                diagnostics=True) for r in range(seeds)]
    return run_jobs(jobs, verbose=False)


def _ms(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * sd:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", nargs="+", default=["sym0.4", "sym0.6", "pair0.4"])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--retrain-seeds", type=int, default=3)
    ap.add_argument("--budget", type=int, default=17 * EPOCHS)
    ap.add_argument("--hand", action="store_true")
    ap.add_argument("--redraw", action="store_true")
    ap.add_argument("--chosen", type=Path, default=HERE / "results" / "schedules_chosen.json")
    ap.add_argument("--figure", type=Path, default=None)
    args = ap.parse_args()
    folder = tempfile.mkdtemp(prefix="dm-bench-schedules-")
    import torch

    print(f"# {platform.machine()}, {platform.python_version()}, torch {torch.__version__}; "
          f"{EPOCHS}-epoch trials, budget {args.budget} epochs per study, {args.seeds} search "
          f"seed(s), {args.retrain_seeds} retrain seed(s); studies in {folder}")
    print("| setting | method | chosen per search seed | final test % | memorised % | "
          "epochs | moving trials | wall s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    chosen: dict[str, dict[str, list[dict[str, Any]]]] = (
        json.loads(args.chosen.read_text()) if args.redraw else {})
    curves: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for setting in args.settings:
        rows: dict[str, str] = {}
        if not args.redraw:
            for method in SPACES:
                epochs, walls, moved = [], [], []
                for seed in range(args.seeds):
                    losses, ep, wall, n = search(method, setting, seed, folder, args.budget)
                    epochs.append(ep)
                    walls.append(wall)
                    moved.append(n)
                    picked = chosen.setdefault(setting, {})
                    picked.setdefault(method, []).append(losses[0])
                    if len(losses) > 1:
                        picked.setdefault(f"{method} (best moving)", []).append(losses[1])
                rows[method] = (f"{statistics.mean(epochs):.0f} | {statistics.mean(moved):.1f} "
                                f"| {statistics.mean(walls):.0f}")
            args.chosen.write_text(json.dumps(chosen, indent=1))
        labelled = dict(chosen.get(setting, {}))
        if args.hand:
            labelled.update({k: [v] for k, v in HAND.items()})
        for label, losses in labelled.items():
            runs = [r for loss in losses for r in retrain(setting, loss, args.retrain_seeds)]
            curves.setdefault(setting, {})[label] = runs
            tests = [r["test_acc"][-1] for r in runs]
            mem = [r["memorised"][-1] for r in runs]
            names = "; ".join(loss_label(x) for x in losses)
            print(f"| {setting} | {label} | {names} | {_ms(tests)} | {_ms(mem)} | "
                  f"{rows.get(label, '- | - | -')} |", flush=True)
    if args.figure:
        _draw(curves, args.figure)
        print(f"# figure: {args.figure}")


def _draw(curves: dict[str, dict[str, list[dict[str, Any]]]], path: Path) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    settings = list(curves)
    fig = make_subplots(rows=2, cols=len(settings), shared_xaxes=True,
                        subplot_titles=[*settings, *[""] * len(settings)],
                        vertical_spacing=0.08)
    colours = {"fixed": "#0072B2", "schedule": "#D55E00", "schedule (best moving)": "#009E73",
               "hand: lam 2 -> lam 1": "#CC79A7", "hand: lam 1 fixed": "#999999"}
    shown: set[str] = set()
    for c, setting in enumerate(settings, 1):
        for label, runs in curves[setting].items():
            for row, key in ((1, "test_acc"), (2, "memorised")):
                mean = [statistics.mean(r[key][e] for r in runs) for e in range(EPOCHS)]
                fig.add_trace(go.Scatter(
                    x=list(range(1, EPOCHS + 1)), y=mean, mode="lines", name=label,
                    legendgroup=label, showlegend=label not in shown,
                    line={"color": colours.get(label, "#444"),
                          "dash": "dot" if label.startswith("hand") else "solid"}),
                    row=row, col=c)
                shown.add(label)
    fig.update_yaxes(title_text="test accuracy", row=1, col=1)
    fig.update_yaxes(title_text="corrupted labels memorised", row=2, col=1)
    fig.update_xaxes(title_text="epoch", row=2)
    fig.update_layout(template="plotly_white", width=360 * len(settings), height=640,
                      title="Retrained on the full training set: mean over search and retrain "
                            "seeds", legend={"orientation": "h", "y": -0.12})
    fig.write_image(path, scale=2)


if __name__ == "__main__":
    main()
