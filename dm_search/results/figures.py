"""Where the search went: the best value over trials, the families, the (mode, spread) or
(mean, std) plane, what mattered, and the parallel coordinates. Each figure is a plain
function that computes its data (a NamedTuple that tests check) and one that draws it, so that
the report, the dashboard and the tests share the numbers behind every picture; READING says
how to read each figure."""

from __future__ import annotations

from typing import Any, NamedTuple

import plotly.graph_objects as go

from dm_search import storage as st
from dm_search.results.curves import (
    family_colour,
    reference_lines,
)
from dm_search.results.query import (
    edf_of,
    finished_trials,
    is_finite,
    reference_values,
    schedule_of,
    schedule_path,
    searched_by_family,
    trial_value,
)

__all__ = [
    "MIN_IMPORTANCE_TRIALS",
    "READING",
    "FamilyInfo",
    "HistoryInfo",
    "ModeSpreadInfo",
    "ParallelInfo",
    "family_info",
    "history_info",
    "importance_info",
    "mode_spread_info",
    "parallel_info",
    "plot_families",
    "plot_history",
    "plot_importances",
    "plot_mode_spread",
    "plot_parallel",
]


# What to read from each figure, by the id the report and the dashboard give it: the report's
# caption under the figure and the dashboard note's "Reading the figures".
READING: dict[str, tuple[str, str]] = {
    "edf": ("EDFs, the best of each family against CE", "the weight each family's best EDF "
            "gives an example as a function of p, the probability the model gives its label. "
            "CE pushes hardest on low-p examples, which under label noise are mostly the "
            "mislabelled ones; a robust EDF moves its weight to higher p."),
    "history": ("Optimisation history", "validation accuracy trial by trial: filled circles "
                "ran the whole budget, open ones were stopped early (an earlier epoch's "
                "accuracy); the line is the best full-budget trial so far, dashed lines the "
                "reference baselines."),
    "families": ("Validation accuracy by EDF family", "one point per full-budget trial, a grey "
                 "x per early-stopped one; a family whose box sits above the dashed CE line "
                 "beats CE on clean validation data."),
    "mode-spread": ("Accuracy over the (emphasis mode, spread) plane", "where a family puts "
                    "its emphasis (0: the hardest examples, 1: the easiest) and how sharply, "
                    "for the families that have both; colour is the validation accuracy of "
                    "full-budget trials, grey trials were stopped early, squares are the "
                    "references and the star is the study's best trial where its family has "
                    "these coordinates."),
    "mean-std": ("Accuracy over the (mean, std) plane of the emphasis density", "the same "
                 "trials in the mean and std of the emphasis density, which every family has, "
                 "so all families, the references (squares) and the best trial (the star) "
                 "share one pair of axes."),
    "emphasis": ("Emphasis mode over epochs", "where each emphasis schedule had moved the "
                 "emphasis mode by the end of every epoch."),
    "importances": ("Parameter importance within each family", "the share of a family's "
                    "validation-accuracy variance each of its parameters explains (fANOVA); n "
                    "is the family's full-budget trials, and with few of them it is rough."),
    "parallel": ("Parameters against validation accuracy, per family", "one line per "
                 "full-budget trial, coloured by validation accuracy: follow the bright lines "
                 "to the parameter values that won, and see how much each trial memorised."),
    "learning": ("Test accuracy over epochs, best EDF against CE", "the final stage's runs on "
                 "the full training set over the whole budget, the mean over seeds with the "
                 "seeds' range shaded: CE peaks early, then loses accuracy as it memorises "
                 "wrong labels."),
    "memorisation": ("Memorisation of wrong labels, best EDF against CE", "the share of the "
                     "corrupted training labels the model predicts as given, over the whole "
                     "budget: CE climbs towards fitting them all, a robust EDF stays low."),
}


# ====================================================================== study figures
# Each figure: a NamedTuple of plain data computed from the study (tests check these), then a
# function that draws it. They read only the database, so they work during and after a study.
class HistoryInfo(NamedTuple):
    number: list[int]
    value: list[float]
    family: list[str]
    reason: list[str]
    best_so_far: list[float | None]  # over searched trials that ran their full budget
    references: list[tuple[str, float]]  # (label, final val acc) of the reference baselines


class FamilyInfo(NamedTuple):
    family: list[str]  # searched families, by best validation accuracy, best first
    values: list[list[float]]  # val_acc of the family's full-budget trials
    early: list[list[float]]  # val_acc of its early-stopped trials (at the epoch they stopped)
    references: list[tuple[str, float]]  # (label, val_acc) of the baselines: drawn as lines


class ModeSpreadInfo(NamedTuple):
    """Trials on a plane of EDF coordinates: (mode, spread), or (mean, std) of the emphasis
    density, where every family and the references share the axes."""

    family: list[str]
    mode: list[float]  # x: the emphasis mode, or the mean
    spread: list[float]  # y: the spread, or the std
    value: list[float]
    number: list[int]
    finished: list[bool]
    coords: str = "mode_spread"
    reference: list[bool] | None = None
    # An emphasis schedule's path across the plane, start to end (empty for a fixed EDF).
    paths: list[list[tuple[float, float]]] | None = None
    best: int | None = None  # the number of the study's best trial (starred)


def history_info(study: Any) -> HistoryInfo:
    trials = [t for t in finished_trials(study) if trial_value(t) is not None]
    refs = reference_values(study)
    rows = sorted((t for t in trials if not st.is_reference(t)), key=lambda t: t.number)
    best: float | None = None
    best_so_far: list[float | None] = []
    for t in rows:
        if st.is_eligible(t):
            best = t.value if best is None else max(best, t.value)
        best_so_far.append(best)
    return HistoryInfo([t.number for t in rows], [float(trial_value(t) or 0.0) for t in rows],
                       [edf_of(t).family for t in rows], [st.stop_reason(t) for t in rows],
                       best_so_far, refs)


def plot_history(info: HistoryInfo) -> go.Figure:
    fig = go.Figure()
    for fam in sorted(set(info.family)):
        idx = [i for i, f in enumerate(info.family) if f == fam]
        fig.add_trace(go.Scatter(
            x=[info.number[i] for i in idx], y=[info.value[i] for i in idx], mode="markers",
            name=fam, marker={"color": family_colour(fam), "size": 9,
                              "symbol": ["circle" if info.reason[i] == "finished"
                                         else "circle-open" for i in idx]},
            text=[info.reason[i] for i in idx]))
    fig.add_trace(go.Scatter(x=info.number, y=info.best_so_far, mode="lines",
                             name="best (full budget)", line={"color": "#444", "shape": "hv"}))
    reference_lines(fig, info.references)
    # Short titles: a dashboard card is about 600 px wide; the captions explain the marks.
    fig.update_layout(title="Optimisation history",
                      xaxis_title="trial", yaxis_title="clean validation accuracy",
                      yaxis_tickformat=".0%",
                      template="plotly_white")
    return fig


def family_info(study: Any) -> FamilyInfo:
    full: dict[str, list[float]] = {}
    early: dict[str, list[float]] = {}
    for t in finished_trials(study):
        value = trial_value(t)
        if value is None or st.is_reference(t):
            continue
        fam = edf_of(t).family
        (full if st.ran_full_budget(t) else early).setdefault(fam, []).append(value)
        full.setdefault(fam, [])
    order = sorted(full, key=lambda f: -max(full[f], default=-1.0))
    return FamilyInfo(order, [full[f] for f in order], [early.get(f, []) for f in order],
                      reference_values(study))


def plot_families(info: FamilyInfo) -> go.Figure:
    fig = go.Figure()
    for k, fam in enumerate(info.family):
        color = family_colour(fam)
        fig.add_trace(go.Box(y=info.values[k], x=[fam] * len(info.values[k]), name=fam,
                             boxpoints="all", jitter=0.3, marker={"color": color},
                             showlegend=False))
        if info.early[k]:
            fig.add_trace(go.Scatter(x=[fam] * len(info.early[k]), y=info.early[k],
                                     mode="markers", showlegend=False,
                                     marker={"color": "#aaa", "symbol": "x"},
                                     hovertext="early-stopped"))
    reference_lines(fig, info.references)
    fig.update_layout(title="Validation accuracy by EDF family",
                      yaxis_title="clean validation accuracy", yaxis_tickformat=".0%",
                      template="plotly_white")
    return fig


def mode_spread_info(study: Any, coords: str = "mode_spread") -> ModeSpreadInfo:
    """Trials in (mode, spread) (families that have both) or, with ``coords="moments"``, in
    (mean, std) of the emphasis density (every family, the references included)."""
    rows = [t for t in finished_trials(study) if trial_value(t) is not None]
    pts = [(t, edf_of(t)) for t in rows]
    xy: list[tuple[float | None, float | None]]
    if coords == "moments":
        xy = [(e.mean, e.std) for _, e in pts]
    else:
        xy = [(e.mode, e.spread) for _, e in pts]
    keep = [i for i, (x, y) in enumerate(xy) if x is not None and y is not None]
    return ModeSpreadInfo([edf_of(pts[i][0]).family for i in keep],
                          [float(xy[i][0] or 0.0) for i in keep],
                          [float(xy[i][1] or 0.0) for i in keep],
                          [float(trial_value(pts[i][0]) or 0.0) for i in keep],
                          [pts[i][0].number for i in keep],
                          [st.ran_full_budget(pts[i][0]) for i in keep], coords,
                          [st.is_reference(pts[i][0]) for i in keep],
                          [schedule_path(schedule_of(pts[i][0]), coords) for i in keep],
                          getattr(st.best_trial(study), "number", None))


def plot_mode_spread(info: ModeSpreadInfo) -> go.Figure:
    # Squares are the references' alone.
    symbols = ["circle", "diamond", "triangle-up", "triangle-down", "pentagon", "hexagon"]
    refs = info.reference or [False] * len(info.family)
    fig = go.Figure()
    _add_schedule_paths(fig, info)
    grey = "#c8c8c8"
    for k, fam in enumerate(sorted(set(info.family))):
        # Early-stopped trials are grey: an accuracy after 10 epochs on the colour scale of
        # 30-epoch ones would read as a bad EDF when it is only a short run.
        for kind in ("full", "early", "reference"):
            idx = [i for i, f in enumerate(info.family) if f == fam and kind == (
                "reference" if refs[i] else "full" if info.finished[i] else "early")]
            if not idx:
                continue
            what = "stopped early, at" if kind == "early" else "full budget,"
            fig.add_trace(go.Scatter(
                x=[info.mode[i] for i in idx], y=[info.spread[i] for i in idx],
                mode="markers", name=f"{fam} (reference)" if kind == "reference" else fam,
                legendgroup=fam, showlegend=kind != "early",
                text=[f"trial {info.number[i]} ({what} val {100 * info.value[i]:.1f}%)"
                      for i in idx], hoverinfo="text",
                marker={"symbol": "square" if kind == "reference" else symbols[k % len(symbols)],
                        "size": 14 if kind == "reference" else 11,
                        "color": grey if kind == "early" else [info.value[i] for i in idx],
                        "coloraxis": None if kind == "early" else "coloraxis",
                        "line": {"width": 2 if kind == "reference" else 0, "color": "#222"}}))
    if any(not f for f in info.finished):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name="early-stopped",
                                 marker={"color": grey, "size": 11}))
    if info.best is not None and info.best in info.number:
        i = info.number.index(info.best)
        fig.add_trace(go.Scatter(
            x=[info.mode[i]], y=[info.spread[i]], mode="markers",
            name=f"best: trial {info.best}", hoverinfo="text",
            text=[f"best: trial {info.best}, val {100 * info.value[i]:.1f}%"],
            marker={"symbol": "star", "size": 22, "color": "#FFD700",
                    "line": {"width": 1.5, "color": "#222"}}))
    if info.coords == "moments":
        title = "Accuracy over the (mean, std) plane of the emphasis density"
        x_title = "mean of the emphasis density (where the emphasis sits on average)"
        y_title = "std of the emphasis density (how widely it is spread)"
    else:
        title = "Accuracy over the (emphasis mode, spread) plane"
        x_title = "emphasis mode (0: hardest examples count most, 1: easiest)"
        y_title = "spread"
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title,
                      coloraxis={"colorbar": {"title": "val acc<br>(full budget)",
                                              "tickformat": ".1%"},
                                 "colorscale": "Viridis", **_colour_range(info)},
                      template="plotly_white",
                      legend={"orientation": "h", "yanchor": "top", "y": -0.15})
    return fig


def _add_schedule_paths(fig: go.Figure, info: ModeSpreadInfo) -> None:
    """An emphasis schedule's line: its marker is where it starts; the line, where it went."""
    for i, path in enumerate(info.paths or []):
        if len(path) < 2:
            continue
        fig.add_trace(go.Scatter(
            x=[x for x, _ in path], y=[y for _, y in path], mode="lines+markers",
            line={"color": "#999", "width": 1.5, "dash": "dot"},
            marker={"size": [0] * (len(path) - 1) + [9], "symbol": "arrow",
                    "angleref": "previous", "color": "#666"},
            hoverinfo="text", showlegend=False,
            text=[f"trial {info.number[i]}: schedule path"] * len(path)))


def _colour_range(info: ModeSpreadInfo) -> dict[str, float]:
    """The colour scale spans the coloured (full-budget) trials' accuracies: left to plotly,
    a lone reference's value was padded to +-0.5, past 100%."""
    values = [v for v, full in zip(info.value, info.finished, strict=True) if full]
    if not values:
        return {}
    low, high = min(values), max(values)
    pad = 0.005 if high - low < 0.01 else 0.0
    return {"cmin": low - pad, "cmax": high + pad}


# fANOVA on fewer trials than this, or on one parameter, says nothing worth a bar.
MIN_IMPORTANCE_TRIALS = 4


def importance_info(study: Any) -> dict[str, tuple[int, dict[str, float]]]:
    """``{family: (n trials, {parameter: importance})}`` (fANOVA) within each family that has
    at least two sampled parameters and MIN_IMPORTANCE_TRIALS full-budget trials: the space
    is conditional, so importances across families are not defined."""
    import optuna

    out: dict[str, tuple[int, dict[str, float]]] = {}
    for fam, trials in searched_by_family(study).items():
        names = set.intersection(*(set(t.params) for t in trials)) - {"family"}
        if len(trials) < MIN_IMPORTANCE_TRIALS or len(names) < 2:
            continue
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study" line per family
        sub = optuna.create_study(direction="maximize")
        for t in trials:
            sub.add_trial(optuna.trial.create_trial(
                params={n: t.params[n] for n in names},
                distributions={n: t.distributions[n] for n in names}, value=t.value))
        try:
            out[fam] = (len(trials), optuna.importance.get_param_importances(sub))
        except (RuntimeError, ValueError):  # too few distinct values to split on
            continue
    return out


def plot_importances(info: dict[str, tuple[int, dict[str, float]]]) -> go.Figure:
    fig = go.Figure()
    for fam, (n, imp) in sorted(info.items()):
        fig.add_trace(go.Bar(x=list(imp.values()), y=list(imp), orientation="h",
                             name=f"{fam} (n={n})", marker={"color": family_colour(fam)}))
    if not info:
        fig.add_annotation(text=f"no family has two sampled parameters and "
                           f"{MIN_IMPORTANCE_TRIALS} full-budget trials",
                           showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(title="Parameter importance within each family (fANOVA, n: full-budget "
                      "trials)", xaxis_title="importance (share of the variance explained)",
                      template="plotly_white")
    return fig


class ParallelInfo(NamedTuple):
    """One family's full-budget trials: ``columns[name]`` per trial, val acc last."""

    family: str
    numbers: list[int]
    columns: dict[str, list[float]]


def parallel_info(study: Any) -> list[ParallelInfo]:
    """Per family with at least two full-budget trials: its sampled parameters, its
    emphasis coordinates, memorisation and validation accuracy, one row per trial."""
    out = []
    for fam, trials in sorted(searched_by_family(study).items()):
        names = sorted(set.intersection(*(set(t.params) for t in trials)) - {"family"})
        if len(trials) < 2 or not names:
            continue
        trials = sorted(trials, key=lambda t: t.number)
        cols: dict[str, list[float]] = {
            n.split(".", 1)[-1]: [float(t.params[n]) for t in trials] for n in names}
        mem = [st.trial_final(t).get("memorised") for t in trials]
        if all(is_finite(m) for m in mem):
            cols["memorised"] = [float(m) for m in mem]  # type: ignore[arg-type]
        cols["val_acc"] = [float(t.value) for t in trials]
        out.append(ParallelInfo(fam, [t.number for t in trials], cols))
    return out


def plot_parallel(info: ParallelInfo) -> go.Figure:
    names = {"val_acc": "validation accuracy", "memorised": "memorised"}
    dims = [{"label": names.get(name, name), "values": vals,
             "tickformat": ".1%" if name in names else ".3~g"}
            for name, vals in info.columns.items()]
    fig = go.Figure(go.Parcoords(
        line={"color": info.columns["val_acc"], "colorscale": "Viridis", "showscale": True,
              "colorbar": {"title": "val acc", "tickformat": ".1%"}},
        dimensions=dims))
    fig.update_layout(title=f"{info.family}: parameters against validation accuracy "
                      f"({len(info.numbers)} full-budget trials)", template="plotly_white",
                      margin={"l": 60, "r": 40, "t": 90, "b": 40})
    return fig
