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
from dm_search.edf import EDF
from dm_search.labels import loss_label
from dm_search.schedule import EDFSchedule

__all__ = [
    "CurvesInfo",
    "EDFCurvesInfo",
    "FamilyInfo",
    "FinalInfo",
    "HistoryInfo",
    "ModeSpreadInfo",
    "best_edf_curves_info",
    "curves_info",
    "edf_curves_info",
    "family_info",
    "final_info",
    "history_info",
    "importance_info",
    "mode_spread_info",
    "plot_curves",
    "plot_edf_curves",
    "plot_families",
    "plot_history",
    "plot_importances",
    "plot_mode_spread",
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


# Colour-blind-safe (Okabe-Ito), so that a mode marker always matches its curve.
_PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000",
            "#F0E442")


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
        color = palette[colour % len(palette)]
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
        legend={"orientation": "h", "y": -0.2},
        width=820,
        height=480,
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


def write_figure(fig: go.Figure, path: str | Path) -> Path:
    """Write ``fig`` as self-contained HTML (``.html``) or an image (``.png``, ``.svg``)."""
    path = Path(path)
    check_figure_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".html", ".htm"):
        fig.write_html(path, include_plotlyjs=True)
    else:
        fig.write_image(path, scale=2 if path.suffix.lower() == ".png" else 1)
    return path


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
    family: list[str]  # sorted by best validation accuracy, best first
    values: list[list[float]]  # val_acc of the family's full-budget trials
    early: list[list[float]]  # val_acc of its early-stopped trials (at the epoch they stopped)


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


class CurvesInfo(NamedTuple):
    """Per-epoch metric of a few trials: ``series[k]`` is (epochs, values) of ``labels[k]``."""

    metric: str
    labels: list[str]
    series: list[tuple[list[int], list[float]]]


class FinalInfo(NamedTuple):
    rows: list[tuple[str, float, float, int]]  # (label, mean test acc, std, seeds)
    gain: float | None


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


def _family_label(t: Any) -> str:
    fam = edf_of(t).family
    return f"{fam} (reference)" if st.is_reference(t) else fam


def history_info(study: Any) -> HistoryInfo:
    trials = [t for t in finished_trials(study) if _value(t) is not None]
    refs = [(f"{edf_of(t)} (reference)", float(t.value)) for t in trials
            if st.is_reference(t) and st.ran_full_budget(t)]
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
                      annotation_text=f"{label}: {value:.4f}",
                      annotation_position="bottom right")


def plot_history(info: HistoryInfo) -> go.Figure:
    fig = go.Figure()
    families = sorted(set(info.family))
    for k, fam in enumerate(families):
        idx = [i for i, f in enumerate(info.family) if f == fam]
        fig.add_trace(go.Scatter(
            x=[info.number[i] for i in idx], y=[info.value[i] for i in idx], mode="markers",
            name=fam, marker={"color": _PALETTE[k % len(_PALETTE)], "size": 9,
                              "symbol": ["circle" if info.reason[i] == "finished"
                                         else "circle-open" for i in idx]},
            text=[info.reason[i] for i in idx]))
    fig.add_trace(go.Scatter(x=info.number, y=info.best_so_far, mode="lines",
                             name="best (full budget)", line={"color": "#444", "shape": "hv"}))
    _reference_lines(fig, info.references)
    fig.update_layout(title="Optimisation history (open circles: early-stopped; dashed: "
                      "reference baselines)",
                      xaxis_title="trial", yaxis_title="clean validation accuracy",
                      template="plotly_white")
    return fig


def family_info(study: Any) -> FamilyInfo:
    full: dict[str, list[float]] = {}
    early: dict[str, list[float]] = {}
    for t in finished_trials(study):
        value = _value(t)
        if value is None:
            continue
        fam = _family_label(t)
        (full if st.ran_full_budget(t) else early).setdefault(fam, []).append(value)
        full.setdefault(fam, [])
    order = sorted(full, key=lambda f: -max(full[f], default=-1.0))
    return FamilyInfo(order, [full[f] for f in order], [early.get(f, []) for f in order])


def plot_families(info: FamilyInfo) -> go.Figure:
    fig = go.Figure()
    for k, fam in enumerate(info.family):
        color = _PALETTE[k % len(_PALETTE)]
        fig.add_trace(go.Box(y=info.values[k], name=fam, boxpoints="all", jitter=0.3,
                             marker={"color": color}, showlegend=False))
        if info.early[k]:
            fig.add_trace(go.Scatter(x=[fam] * len(info.early[k]), y=info.early[k],
                                     mode="markers", showlegend=False,
                                     marker={"color": color, "symbol": "x", "opacity": 0.5},
                                     hovertext="early-stopped"))
    fig.update_layout(title="Validation accuracy by EDF family (x: early-stopped)",
                      yaxis_title="clean validation accuracy", template="plotly_white")
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
                          [_path(schedule_of(pts[i][0]), coords) for i in keep])


def plot_mode_spread(info: ModeSpreadInfo) -> go.Figure:
    symbols = ["circle", "square", "diamond", "triangle-up", "cross"]
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
    for k, fam in enumerate(sorted(set(info.family))):
        for ref in (False, True):
            idx = [i for i, f in enumerate(info.family) if f == fam and refs[i] == ref]
            if not idx:
                continue
            fig.add_trace(go.Scatter(
                x=[info.mode[i] for i in idx], y=[info.spread[i] for i in idx],
                mode="markers", name=f"{fam} (reference)" if ref else fam,
                text=[f"trial {info.number[i]}: val {info.value[i]:.4f}" for i in idx],
                marker={"symbol": "star" if ref else symbols[k % len(symbols)],
                        "size": 16 if ref else 12,
                        "color": [info.value[i] for i in idx], "coloraxis": "coloraxis",
                        "line": {"width": [0 if info.finished[i] else 2 for i in idx],
                                 "color": "#999"}}))
    if info.coords == "moments":
        title = "Accuracy over the (mean, std) plane of the emphasis density"
        x_title = "mean of the emphasis density (where the emphasis sits on average)"
        y_title = "std of the emphasis density (how widely it is spread)"
    else:
        title = "Accuracy over the (emphasis mode, spread) plane"
        x_title = "emphasis mode (0: hardest examples count most, 1: easiest)"
        y_title = "spread"
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title,
                      coloraxis={"colorbar": {"title": "val acc"}, "colorscale": "Viridis"},
                      template="plotly_white", legend={"orientation": "h", "y": -0.2})
    return fig


def top_trials(study: Any, k: int = 3) -> list[Any]:
    eligible = [t for t in finished_trials(study) if st.is_eligible(t)]
    return sorted(eligible, key=lambda t: (-t.value, t.number))[:k]


def best_edf_curves_info(study: Any, k: int = 3) -> EDFCurvesInfo:
    """The top-k full-budget trials' EDFs against cross-entropy's, unit area; an emphasis
    schedule shows its curve at the start (dotted) and at the end."""
    edfs: list[EDF] = []
    labels: list[str] = []
    dash: list[str] = []
    for i, t in enumerate(top_trials(study, k)):
        sched = schedule_of(t)
        if sched is not None:
            edfs += [sched.start, sched.end]
            labels += [f"#{i + 1} start {sched.start}",
                       f"#{i + 1} end {trial_label(t).split(' -> ', 1)[1]}"]
            dash += ["dot", "solid"]
        else:
            edfs.append(edf_of(t))
            labels.append(f"#{i + 1} {edf_of(t)}")
            dash.append("solid")
    info = edf_curves_info([*edfs, EDF("cce")])
    return info._replace(labels=[*labels, "cce (CE)"], dash=[*dash, "solid"])


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


def plot_curves(info: CurvesInfo, title: str, yaxis: str) -> go.Figure:
    fig = go.Figure()
    for k, (label, (x, y)) in enumerate(zip(info.labels, info.series, strict=True)):
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=label,
                                 line={"color": _PALETTE[k % len(_PALETTE)]}))
    if not info.series:
        fig.add_annotation(text=f"no per-epoch {info.metric} recorded (diagnostics off?)",
                           showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(title=title, xaxis_title="epoch", yaxis_title=yaxis,
                      template="plotly_white", legend={"orientation": "h", "y": -0.25})
    return fig


def importance_info(study: Any) -> dict[str, dict[str, float]]:
    """Parameter importances (fANOVA) within each family that has enough full-budget trials:
    the space is conditional, so importances across families are not defined."""
    import optuna

    by_family: dict[str, list[Any]] = {}
    for t in finished_trials(study):
        if t.state.name == "COMPLETE" and is_finite(t.value) and t.params:
            by_family.setdefault(edf_of(t).family, []).append(t)
    out: dict[str, dict[str, float]] = {}
    for fam, trials in by_family.items():
        names = set.intersection(*(set(t.params) for t in trials)) - {"family"}
        if len(trials) < 4 or not names:
            continue
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study" line per family
        sub = optuna.create_study(direction="maximize")
        for t in trials:
            sub.add_trial(optuna.trial.create_trial(
                params={n: t.params[n] for n in names},
                distributions={n: t.distributions[n] for n in names}, value=t.value))
        try:
            out[fam] = optuna.importance.get_param_importances(sub)
        except (RuntimeError, ValueError):  # too few distinct values to split on
            continue
    return out


def plot_importances(info: dict[str, dict[str, float]]) -> go.Figure:
    fig = go.Figure()
    for k, (fam, imp) in enumerate(sorted(info.items())):
        fig.add_trace(go.Bar(x=list(imp.values()), y=list(imp), orientation="h", name=fam,
                             marker={"color": _PALETTE[k % len(_PALETTE)]}))
    if not info:
        fig.add_annotation(text="not enough trials per family for importances",
                           showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(title="Parameter importance within each family (fANOVA)",
                      xaxis_title="importance", template="plotly_white")
    return fig


def final_info(study: Any) -> FinalInfo:
    final = st.final_stage(study)
    if not final:
        return FinalInfo([], None)
    rows = []
    for key, label in (("best", f"best: {loss_label(final['best'])} "
                                f"(trial {final['best']['trial']})"),
                       ("ce", "cross-entropy")):
        r = final[key]
        rows.append((label, r["test_acc_mean"], r["test_acc_std"], len(r["runs"])))
    return FinalInfo(rows, final.get("gain"))


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
