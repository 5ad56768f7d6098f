"""EDF curves and what every figure shares: the family colours, the curves of a set of EDFs,
and writing a figure to an image file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import plotly.graph_objects as go
import torch

from dm_search.edf import EDF

__all__ = [
    "IMAGE_SUFFIXES",
    "PALETTE",
    "EDFCurvesInfo",
    "check_figure_path",
    "edf_curves_info",
    "family_colour",
    "plot_edf_curves",
    "reference_lines",
    "rgba",
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
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000",
            "#F0E442")


# One colour per family in every figure of a study: dm is always blue, CE always green.
_FAMILY_ORDER = ("dm", "gce", "cce", "mae", "mse", "beta", "normal", "exponential", "uniform")


def family_colour(family: str) -> str:
    base = family.removesuffix(" (reference)")
    k = (_FAMILY_ORDER.index(base) if base in _FAMILY_ORDER
         else sum(map(ord, base)))  # a user's own family: stable across runs
    return PALETTE[k % len(PALETTE)]


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
    palette = PALETTE
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


def reference_lines(fig: go.Figure, refs: Sequence[tuple[str, float]]) -> None:
    for label, value in refs:
        fig.add_hline(y=value, line={"dash": "dash", "color": "#888"},
                      annotation_text=f"{label}: {100 * value:.1f}%",
                      annotation_position="bottom right")


def rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"
