"""How the trials learned: the top trials' learning curves, the best EDF of each family, the
final stage's runs as bands over seeds, and one trial's curves for the dashboard."""

from __future__ import annotations

from typing import Any, NamedTuple

import plotly.graph_objects as go

from dm_search import storage as st
from dm_search.common.labels import final_labels
from dm_search.edf import EDF
from dm_search.results.curves import (
    PALETTE,
    EDFCurvesInfo,
    edf_curves_info,
    family_colour,
    rgba,
)
from dm_search.results.query import (
    best_per_family,
    coordinates,
    edf_of,
    finished_trials,
    is_finite,
    schedule_of,
    top_trials,
    trial_label,
    trial_value,
)

__all__ = ["BandInfo", "CurvesInfo", "best_edf_curves_info", "curves_info", "final_curves_info",
           "plot_bands", "plot_curves", "plot_trial_curves"]


class CurvesInfo(NamedTuple):
    """Per-epoch metric of a few trials: ``series[k]`` is (epochs, values) of ``labels[k]``."""

    metric: str
    labels: list[str]
    series: list[tuple[list[int], list[float]]]


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
    ce = [t for t in finished_trials(study)
          if edf_of(t).family == "cce" and trial_value(t) is not None]
    if ce:
        best_ce = max(ce, key=lambda t: (st.is_reference(t), st.ran_full_budget(t),
                                         st.trial_epochs(t)[0] or 0, trial_value(t)))
        if best_ce not in chosen:
            chosen.append(best_ce)
    labels, series = [], []
    for t in chosen:
        hist = st.trial_history(study, t)
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
                                 line={"color": PALETTE[k % len(PALETTE)]}))
    if not info.series:
        fig.add_annotation(text=f"no per-epoch {info.metric} recorded (diagnostics off?)",
                           showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(title=title, xaxis_title="epoch", yaxis_title=yaxis,
                      yaxis_tickformat=".0%" if percent else None,
                      template="plotly_white", legend={"orientation": "h", "y": -0.25})
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
                                     fill="tonexty", fillcolor=rgba(colour, 0.2),
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
                                     line={"color": PALETTE[k % len(PALETTE)]}))
    fig.update_layout(title=title, xaxis_title="epoch", yaxis_range=[0, 1],
                      template="plotly_white", width=720, height=420)
    return fig
