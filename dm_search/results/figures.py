"""Figures. Each one is split into a plain function that computes its data (a NamedTuple that
tests can check) and one that draws a plotly figure from it, the way Optuna's visualisation
modules do; the dashboard and the HTML report only choose which to show."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import plotly.graph_objects as go
import torch

from dm_search import storage as st
from dm_search.common.labels import final_labels, loss_label
from dm_search.edf import EDF, EDFSchedule

__all__ = [
    "READING",
    "BandInfo",
    "CurvesInfo",
    "EDFCurvesInfo",
    "FamilyInfo",
    "HistoryInfo",
    "ModeSpreadInfo",
    "ParallelInfo",
    "best_edf_curves_info",
    "best_per_family",
    "coordinates",
    "curves_info",
    "edf_curves_info",
    "eligible_by_family",
    "family_info",
    "final_curves_info",
    "history_info",
    "importance_info",
    "mode_spread_info",
    "parallel_info",
    "plot_bands",
    "plot_curves",
    "plot_edf_curves",
    "plot_families",
    "plot_history",
    "plot_importances",
    "plot_mode_spread",
    "plot_parallel",
    "plot_trial_curves",
    "top_trials",
    "write_figure",
]


class EDFCurvesInfo(NamedTuple):
    """Weight curves on a grid of p. ``weights[k]`` belongs to ``labels[k]``."""

    p: list[float]
    labels: list[str]
    weights: list[list[float]]
    modes: list[float | None]
    normalised: bool
    dash: list[str] | None = None  # plotly line dash per curve ("solid", "dot"); None: solid
    colours: list[str] | None = None  # per curve; None: the palette in turn


# Colour-blind-safe (Okabe-Ito), so that a mode marker always matches its curve.
_PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000",
            "#F0E442")


# One colour per family in every figure of a study: dm is always blue, CE always green.
_FAMILY_ORDER = ("dm", "gce", "cce", "mae", "mse", "beta", "normal", "exponential", "uniform")


def family_colour(family: str) -> str:
    base = family.removesuffix(" (reference)")
    k = (_FAMILY_ORDER.index(base) if base in _FAMILY_ORDER
         else sum(map(ord, base)))  # a user's own family: stable across runs
    return _PALETTE[k % len(_PALETTE)]


def edf_curves_info(
    edfs: Sequence[EDF], *, points: int = 201, normalise: bool = True
) -> EDFCurvesInfo:
    """Evaluate each EDF on ``points`` values of p in [0, 1].

    With ``normalise`` each curve is scaled to unit area (trapezoid rule), which is what
    matters under derivative normalisation: only the relative weights within a batch count.
    Endpoints where a curve is infinite (beta family with alpha or eta < 1) are left out.
    """
    if points < 3:
        raise ValueError(f"points must be >= 3; got {points}")
    p = torch.linspace(0.0, 1.0, points, dtype=torch.float64)
    curves = []
    for edf in edfs:
        w = edf.weight(p)
        w = torch.where(torch.isfinite(w), w, torch.nan)
        if normalise:
            ok = torch.isfinite(w)
            area = torch.trapezoid(w[ok], p[ok])
            if area > 0:
                w = w / area
        curves.append([float(v) for v in w])
    return EDFCurvesInfo(
        p=[float(v) for v in p],
        labels=[str(e) for e in edfs],
        weights=curves,
        modes=[e.mode for e in edfs],
        normalised=normalise,
    )


def plot_edf_curves(
    info: EDFCurvesInfo, *, title: str = "Emphasis density functions"
) -> go.Figure:
    """Draw :func:`edf_curves_info`: weight against p, one line per EDF, modes marked."""
    fig = go.Figure()
    palette = _PALETTE
    dashes = info.dash or ["solid"] * len(info.labels)
    colour = 0
    for k, (label, w, mode) in enumerate(
        zip(info.labels, info.weights, info.modes, strict=True)
    ):
        # A schedule's start (dotted) shares its end's colour: one colour per trial.
        colour += k > 0 and dashes[k - 1] != "dot"
        color = info.colours[k] if info.colours else palette[colour % len(palette)]
        fig.add_trace(
            go.Scatter(x=info.p, y=w, mode="lines", name=label,
                       line={"color": color, "width": 3, "dash": dashes[k]})
        )
        if mode is not None:
            k = min(range(len(info.p)), key=lambda i: abs(info.p[i] - mode))
            fig.add_trace(
                go.Scatter(
                    x=[info.p[k]], y=[w[k]], mode="markers", showlegend=False,
                    marker={"size": 10, "symbol": "diamond", "color": color},
                    hoverinfo="text",
                    text=[f"{label}: mode {mode:.3f}"],
                )
            )
    fig.update_layout(
        title=title,
        xaxis_title="p (probability of the labelled class)",
        yaxis_title="weight (unit area)" if info.normalised else "weight w(p)",
        template="plotly_white",
        # No fixed width: the figure fills its card (a fixed 820 px cut the dashboard's card
        # off at p = 0.85). Static exports give their own size.
        legend={"orientation": "h", "yanchor": "top", "y": -0.18},
        margin={"l": 60, "r": 20, "t": 60, "b": 40},
    )
    return fig


IMAGE_SUFFIXES = (".png", ".svg", ".pdf", ".jpg", ".jpeg", ".webp")


def check_figure_path(path: str | Path) -> None:
    """ValueError unless ``path`` names a kind of file write_figure writes."""
    if Path(path).suffix.lower() not in (".html", ".htm", *IMAGE_SUFFIXES):
        raise ValueError(
            f"cannot write a figure as {Path(path).name!r}: use a .html, .png, .svg, .pdf, .jpg "
            "or .webp file name"
        )


def write_figure(fig: go.Figure, path: str | Path, *,
                 size: tuple[int, int] | None = None) -> Path:
    """Write ``fig`` as self-contained HTML (``.html``) or an image (``.png``, ``.svg``);
    ``size`` is an image's (width, height) in px where the figure has none of its own."""
    path = Path(path)
    check_figure_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".html", ".htm"):
        fig.write_html(path, include_plotlyjs=True)
    else:
        width, height = size or (None, None)
        fig.write_image(path, scale=2 if path.suffix.lower() == ".png" else 1,
                        width=fig.layout.width or width, height=fig.layout.height or height)
    return path


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


class CurvesInfo(NamedTuple):
    """Per-epoch metric of a few trials: ``series[k]`` is (epochs, values) of ``labels[k]``."""

    metric: str
    labels: list[str]
    series: list[tuple[list[int], list[float]]]


def finished_trials(study: Any) -> list[Any]:
    return [t for t in study.get_trials(deepcopy=False)
            if st.trial_edf(t) and t.state.is_finished()]


def edf_of(t: Any) -> EDF:
    return EDF.from_config(st.trial_edf(t) or {})


def schedule_of(t: Any) -> EDFSchedule | None:
    """The trial's emphasis schedule; None for a fixed EDF."""
    sched = st.trial_schedule(t)
    if sched is None:
        return None
    return EDFSchedule.from_config({"edf": st.trial_edf(t), **sched})


def trial_label(t: Any) -> str:
    """The trial's EDF, or its schedule, in a few words."""
    sched = st.trial_schedule(t)
    return loss_label({"edf": st.trial_edf(t) or {}, **(sched or {})})


def _path(sched: EDFSchedule | None, coords: str) -> list[tuple[float, float]]:
    out = []
    for e in sched.path() if sched is not None else []:
        x, y = (e.mean, e.std) if coords == "moments" else (e.mode, e.spread)
        if x is not None and y is not None:
            out.append((float(x), float(y)))
    return out


def is_finite(v: Any) -> bool:
    return isinstance(v, int | float) and v == v and abs(v) != float("inf")


def _value(t: Any) -> float | None:
    """The trial's validation accuracy; for an early-stopped (PRUNED) trial, the one at the
    epoch where it stopped."""
    if is_finite(t.value):
        return float(t.value)
    if st.stop_reason(t) != st.EARLY:
        return None
    hist = st.trial_history(t)
    last = hist[-1].get("val_acc") if hist else None
    return float(last) if last is not None and is_finite(last) else None


def history_info(study: Any) -> HistoryInfo:
    trials = [t for t in finished_trials(study) if _value(t) is not None]
    refs = _references(study)
    rows = sorted((t for t in trials if not st.is_reference(t)), key=lambda t: t.number)
    best: float | None = None
    best_so_far: list[float | None] = []
    for t in rows:
        if st.is_eligible(t):
            best = t.value if best is None else max(best, t.value)
        best_so_far.append(best)
    return HistoryInfo([t.number for t in rows], [float(_value(t) or 0.0) for t in rows],
                       [edf_of(t).family for t in rows], [st.stop_reason(t) for t in rows],
                       best_so_far, refs)


def _reference_lines(fig: go.Figure, refs: Sequence[tuple[str, float]]) -> None:
    for label, value in refs:
        fig.add_hline(y=value, line={"dash": "dash", "color": "#888"},
                      annotation_text=f"{label}: {100 * value:.1f}%",
                      annotation_position="bottom right")


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
    _reference_lines(fig, info.references)
    # Short titles: a dashboard card is about 600 px wide; the captions explain the marks.
    fig.update_layout(title="Optimisation history",
                      xaxis_title="trial", yaxis_title="clean validation accuracy",
                      yaxis_tickformat=".0%",
                      template="plotly_white")
    return fig


def _references(study: Any) -> list[tuple[str, float]]:
    return [(f"{edf_of(t)} (reference)", float(t.value)) for t in finished_trials(study)
            if st.is_reference(t) and st.ran_full_budget(t)]


def family_info(study: Any) -> FamilyInfo:
    full: dict[str, list[float]] = {}
    early: dict[str, list[float]] = {}
    for t in finished_trials(study):
        value = _value(t)
        if value is None or st.is_reference(t):
            continue
        fam = edf_of(t).family
        (full if st.ran_full_budget(t) else early).setdefault(fam, []).append(value)
        full.setdefault(fam, [])
    order = sorted(full, key=lambda f: -max(full[f], default=-1.0))
    return FamilyInfo(order, [full[f] for f in order], [early.get(f, []) for f in order],
                      _references(study))


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
    _reference_lines(fig, info.references)
    fig.update_layout(title="Validation accuracy by EDF family",
                      yaxis_title="clean validation accuracy", yaxis_tickformat=".0%",
                      template="plotly_white")
    return fig


def mode_spread_info(study: Any, coords: str = "mode_spread") -> ModeSpreadInfo:
    """Trials in (mode, spread) (families that have both) or, with ``coords="moments"``, in
    (mean, std) of the emphasis density (every family, the references included)."""
    rows = [t for t in finished_trials(study) if _value(t) is not None]
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
                          [float(_value(pts[i][0]) or 0.0) for i in keep],
                          [pts[i][0].number for i in keep],
                          [st.ran_full_budget(pts[i][0]) for i in keep], coords,
                          [st.is_reference(pts[i][0]) for i in keep],
                          [_path(schedule_of(pts[i][0]), coords) for i in keep],
                          getattr(st.best_trial(study), "number", None))


def plot_mode_spread(info: ModeSpreadInfo) -> go.Figure:
    # Squares are the references' alone.
    symbols = ["circle", "diamond", "triangle-up", "triangle-down", "pentagon", "hexagon"]
    refs = info.reference or [False] * len(info.family)
    fig = go.Figure()
    for i, path in enumerate(info.paths or []):
        if len(path) < 2:
            continue
        # An emphasis schedule: its marker is where it starts; the line shows where it went.
        fig.add_trace(go.Scatter(
            x=[x for x, _ in path], y=[y for _, y in path], mode="lines+markers",
            line={"color": "#999", "width": 1.5, "dash": "dot"},
            marker={"size": [0] * (len(path) - 1) + [9], "symbol": "arrow",
                    "angleref": "previous", "color": "#666"},
            hoverinfo="text", showlegend=False,
            text=[f"trial {info.number[i]}: schedule path"] * len(path)))
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


def _colour_range(info: ModeSpreadInfo) -> dict[str, float]:
    """The colour scale spans the coloured (full-budget) trials' accuracies: left to plotly,
    a lone reference's value was padded to +-0.5, past 100%."""
    values = [v for v, full in zip(info.value, info.finished, strict=True) if full]
    if not values:
        return {}
    low, high = min(values), max(values)
    pad = 0.005 if high - low < 0.01 else 0.0
    return {"cmin": low - pad, "cmax": high + pad}


def top_trials(study: Any, k: int = 3) -> list[Any]:
    eligible = [t for t in finished_trials(study) if st.is_eligible(t)]
    return sorted(eligible, key=lambda t: (-t.value, t.number))[:k]


def coordinates(edf: EDF) -> str:
    """Where an EDF puts its emphasis, in words: its mode and spread, or the mean and std of
    its emphasis density for the families without a mode."""
    moments = f"mean {edf.mean:.2f}, std {edf.std:.2f}"
    if edf.mode is not None and edf.spread is not None:
        return f"mode {edf.mode:.2f}, spread {edf.spread:.3g}; {moments}"
    return f"mode {edf.mode:.2f}; {moments}" if edf.mode is not None else moments


def eligible_by_family(study: Any) -> dict[str, list[Any]]:
    """Each family's searched trials that ran their full budget."""
    out: dict[str, list[Any]] = {}
    for t in finished_trials(study):
        if st.is_eligible(t):
            out.setdefault(edf_of(t).family, []).append(t)
    return out


def best_per_family(study: Any) -> list[Any]:
    """Each searched family's best full-budget trial, best first: one curve per family, never
    two near-duplicates of one (GCE with q 0.70 and 0.71)."""
    best = [max(ts, key=lambda t: (t.value, -t.number))
            for ts in eligible_by_family(study).values()]
    return sorted(best, key=lambda t: (-t.value, t.number))


def best_edf_curves_info(study: Any) -> EDFCurvesInfo:
    """Each family's best full-budget trial's EDF against cross-entropy's, unit area, labelled
    with its coordinates and validation accuracy; an emphasis schedule shows its curve at the
    start (dotted) and at the end."""
    edfs: list[EDF] = []
    labels: list[str] = []
    dash: list[str] = []
    chosen = best_per_family(study)
    for t in chosen:
        sched, val = schedule_of(t), f"val {100 * t.value:.1f}%"
        fam = edf_of(t).family
        if sched is not None:
            edfs += [sched.start, sched.end]
            labels += [f"{fam}, trial {t.number}, start: {coordinates(sched.start)}",
                       f"{fam}, trial {t.number}, end: {coordinates(sched.end)}, {val}"]
            dash += ["dot", "solid"]
        else:
            edfs.append(edf_of(t))
            labels.append(f"{fam}, trial {t.number}: {coordinates(edf_of(t))}, {val}")
            dash.append("solid")
    if not any(edf_of(t).family == "cce" for t in chosen):
        ce = [t for t in finished_trials(study)
              if edf_of(t).family == "cce" and st.ran_full_budget(t)]
        edfs.append(EDF("cce"))
        labels.append("CE (cce)" + (f", reference: val {100 * max(t.value for t in ce):.1f}%"
                                    if ce else ""))
        dash.append("solid")
    info = edf_curves_info(edfs)
    return info._replace(labels=labels, dash=dash,
                         colours=[family_colour(e.family) for e in edfs])


def curves_info(study: Any, metric: str, k: int = 3) -> CurvesInfo:
    """``metric`` per epoch for the top-k trials and the best cross-entropy trial (the one that
    ran longest when no CE trial ran its full budget: CE is often stopped early)."""
    chosen = top_trials(study, k)
    ce = [t for t in finished_trials(study) if edf_of(t).family == "cce" and _value(t) is not None]
    if ce:
        best_ce = max(ce, key=lambda t: (st.is_reference(t), st.ran_full_budget(t),
                                         st.trial_epochs(t)[0] or 0, _value(t)))
        if best_ce not in chosen:
            chosen.append(best_ce)
    labels, series = [], []
    for t in chosen:
        hist = st.trial_history(t)
        pts = [(int(h["epoch"]), float(h[metric])) for h in hist if is_finite(h.get(metric))]
        if pts:
            ref = " (reference)" if st.is_reference(t) else ""
            labels.append(f"trial {t.number}: {trial_label(t)}{ref}")
            series.append(([e for e, _ in pts], [v for _, v in pts]))
    return CurvesInfo(metric, labels, series)


def plot_curves(info: CurvesInfo, title: str, yaxis: str, *, percent: bool = True
                ) -> go.Figure:
    fig = go.Figure()
    for k, (label, (x, y)) in enumerate(zip(info.labels, info.series, strict=True)):
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=label,
                                 line={"color": _PALETTE[k % len(_PALETTE)]}))
    if not info.series:
        fig.add_annotation(text=f"no per-epoch {info.metric} recorded (diagnostics off?)",
                           showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(title=title, xaxis_title="epoch", yaxis_title=yaxis,
                      yaxis_tickformat=".0%" if percent else None,
                      template="plotly_white", legend={"orientation": "h", "y": -0.25})
    return fig


# fANOVA on fewer trials than this, or on one parameter, says nothing worth a bar.
MIN_IMPORTANCE_TRIALS = 4


def _searched_by_family(study: Any) -> dict[str, list[Any]]:
    """Each family's full-budget trials with sampled parameters."""
    by = {fam: [t for t in ts if t.params] for fam, ts in eligible_by_family(study).items()}
    return {fam: ts for fam, ts in by.items() if ts}


def importance_info(study: Any) -> dict[str, tuple[int, dict[str, float]]]:
    """``{family: (n trials, {parameter: importance})}`` (fANOVA) within each family that has
    at least two sampled parameters and MIN_IMPORTANCE_TRIALS full-budget trials: the space
    is conditional, so importances across families are not defined."""
    import optuna

    out: dict[str, tuple[int, dict[str, float]]] = {}
    for fam, trials in _searched_by_family(study).items():
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
    for fam, trials in sorted(_searched_by_family(study).items()):
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


class BandInfo(NamedTuple):
    """A metric per epoch over several seeds: ``mean[k]``, ``low[k]`` and ``high[k]`` (min and
    max over the seeds) at ``epochs[k]`` for ``labels[k]``, run ``seeds[k]`` times."""

    metric: str
    labels: list[str]
    families: list[str]  # the EDF family of each: its colour
    epochs: list[list[int]]
    mean: list[list[float]]
    low: list[list[float]]
    high: list[list[float]]
    seeds: list[int]


def final_curves_info(study: Any, metric: str) -> BandInfo | None:
    """``metric`` per epoch of the final stage's runs (the best EDF and CE, retrained on the
    full training set for the whole budget); None without a final stage, or one recorded
    before its runs kept their curves."""
    final = st.final_stage(study)
    if not final:
        return None
    info = BandInfo(metric, [], [], [], [], [], [], [])
    for key, label in final_labels(final).items():
        runs = [r.get("history") or [] for r in final[key]["runs"]]
        if not runs or not all(runs):
            return None
        by_epoch: dict[int, list[float]] = {}
        for hist in runs:
            for h in hist:
                if is_finite(h.get(metric)):
                    by_epoch.setdefault(int(h["epoch"]), []).append(float(h[metric]))
        epochs = sorted(by_epoch)
        info.labels.append(label)
        info.families.append(EDF.from_config(final[key]["edf"]).family)
        info.epochs.append(epochs)
        info.mean.append([sum(by_epoch[e]) / len(by_epoch[e]) for e in epochs])
        info.low.append([min(by_epoch[e]) for e in epochs])
        info.high.append([max(by_epoch[e]) for e in epochs])
        info.seeds.append(len(runs))
    return info


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def plot_bands(info: BandInfo, title: str, yaxis: str) -> go.Figure:
    """Mean over the seeds as a line, the range between the lowest and highest seed shaded."""
    fig = go.Figure()
    for k, label in enumerate(info.labels):
        colour = family_colour(info.families[k])
        x = info.epochs[k]
        if info.seeds[k] > 1:
            fig.add_trace(go.Scatter(x=x, y=info.high[k], mode="lines", line={"width": 0},
                                     hoverinfo="skip", showlegend=False, legendgroup=label))
            fig.add_trace(go.Scatter(x=x, y=info.low[k], mode="lines", line={"width": 0},
                                     fill="tonexty", fillcolor=_rgba(colour, 0.2),
                                     hoverinfo="skip", showlegend=False, legendgroup=label))
        fig.add_trace(go.Scatter(x=x, y=info.mean[k], mode="lines", legendgroup=label,
                                 name=f"{label} (mean of {info.seeds[k]} seed"
                                      f"{'s' if info.seeds[k] > 1 else ''})",
                                 line={"color": colour, "width": 3}))
    fig.update_layout(title=title, xaxis_title="epoch", yaxis_title=yaxis,
                      yaxis_tickformat=".0%",
                      template="plotly_white",
                      legend={"orientation": "h", "yanchor": "top", "y": -0.18})
    return fig


def plot_trial_curves(history: list[dict[str, float]], title: str) -> go.Figure:
    """One trial's learning curves: accuracies and memorisation per epoch."""
    fig = go.Figure()
    names = {"val_acc": "clean validation acc", "test_acc": "test acc",
             "intact_acc": "intact training acc", "memorised": "memorised (noisy fitted)"}
    for k, (key, name) in enumerate(names.items()):
        pts = [(h["epoch"], h[key]) for h in history if is_finite(h.get(key))]
        if pts:
            fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts],
                                     mode="lines", name=name,
                                     line={"color": _PALETTE[k % len(_PALETTE)]}))
    fig.update_layout(title=title, xaxis_title="epoch", yaxis_range=[0, 1],
                      template="plotly_white", width=720, height=420)
    return fig
