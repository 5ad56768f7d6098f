"""Figures. Each one is split into a plain function that computes its data (a NamedTuple that
tests can check) and one that draws a plotly figure from it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import plotly.graph_objects as go
import torch

from dm_search.edf import EDF

__all__ = ["EDFCurvesInfo", "edf_curves_info", "plot_edf_curves", "write_figure"]


class EDFCurvesInfo(NamedTuple):
    """Weight curves on a grid of p. ``weights[k]`` belongs to ``labels[k]``."""

    p: list[float]
    labels: list[str]
    weights: list[list[float]]
    modes: list[float | None]
    normalised: bool


# Colour-blind-safe (Okabe-Ito), so that a mode marker always matches its curve.
_PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000",
            "#F0E442")


def _label(edf: EDF) -> str:
    params = ", ".join(f"{k}={v:g}" for k, v in edf.params.items())
    return f"{edf.family}({params})" if params else edf.family


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
        labels=[_label(e) for e in edfs],
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
    for k, (label, w, mode) in enumerate(
        zip(info.labels, info.weights, info.modes, strict=True)
    ):
        color = palette[k % len(palette)]
        fig.add_trace(
            go.Scatter(x=info.p, y=w, mode="lines", name=label, line={"color": color, "width": 3})
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


def write_figure(fig: go.Figure, path: str | Path) -> Path:
    """Write ``fig`` as self-contained HTML (``.html``) or an image (``.png``, ``.svg``)."""
    path = Path(path)
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix in (".html", ".htm"):
        fig.write_html(path, include_plotlyjs=True)
    elif suffix in (".png", ".svg", ".pdf", ".jpg", ".jpeg", ".webp"):
        fig.write_image(path, scale=2 if suffix == ".png" else 1)
    else:
        raise ValueError(
            f"Cannot write a figure as {path.name!r}: use a .html, .png, .svg, .pdf, .jpg or "
            ".webp file name."
        )
    return path
