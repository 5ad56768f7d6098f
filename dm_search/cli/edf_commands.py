"""`dm-search edf list | describe | plot`: the EDF families, one EDF's numbers, and curves."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

if TYPE_CHECKING:
    from dm_search.edf import EDF
from dm_search.cli.app import console, edf_app, fail, writable

__all__ = ["edf_describe", "edf_list", "edf_plot"]


def _build(
    family: str, params: list[str], mode: float | None, spread: float | None,
    mean: float | None = None, std: float | None = None,
) -> EDF:
    from dm_search import edf as edf_mod
    from dm_search.edf import EDF

    try:
        if mean is not None or std is not None:
            if params or mode is not None or spread is not None:
                raise ValueError("give one of --param, --mode/--spread or --mean/--std")
            if mean is None:
                raise ValueError("--std needs --mean too")
            return EDF.from_moments(family, mean=mean, std=std)
        if mode is not None or spread is not None:
            if params:
                raise ValueError("give either --param or --mode/--spread, not both")
            if mode is None:
                raise ValueError("--spread needs --mode too")
            return EDF.from_mode_spread(family, mode=mode, spread=spread)
        return EDF(family, **edf_mod.parse_params(params))
    except ValueError as err:
        raise fail(str(err)) from None


@edf_app.command("list")
def edf_list(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead.")] = False,
) -> None:
    """List the EDF families with their parameters and defaults."""
    from dm_search import edf as edf_mod

    if json_out:
        typer.echo(json.dumps([
            {"family": name, "description": edf_mod.get(name).description,
             "parameters": [{"name": s.name, "default": s.default, "allowed": s.allowed()}
                            for s in edf_mod.get(name).param_specs]}
            for name in edf_mod.names()], indent=2))
        return
    table = Table(title="EDF families")
    table.add_column("family")
    table.add_column("w(p)")
    table.add_column("parameters (default, allowed)")
    for name in edf_mod.names():
        cls = edf_mod.get(name)
        params = "; ".join(f"{s.name}={s.default:g} {s.allowed()}" for s in cls.param_specs)
        table.add_row(name, cls.description, params or "-")
    console.print(table)


@edf_app.command("describe")
def edf_describe(
    family: Annotated[str, typer.Argument(help="EDF family, e.g. dm, normal, cce, gce.")],
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="A parameter as key=value (repeatable)."),
    ] = None,
    mode: Annotated[
        float | None, typer.Option(help="Build from the emphasis mode in [0, 1] instead.")
    ] = None,
    spread: Annotated[float | None, typer.Option(help="Spread (>= 0) with --mode.")] = None,
    mean: Annotated[
        float | None,
        typer.Option(help="Build from the mean of the emphasis density (with --std) instead."),
    ] = None,
    std: Annotated[float | None, typer.Option(help="Std of the emphasis density.")] = None,
    points: Annotated[int, typer.Option(min=2, help="Rows in the w(p) table.")] = 11,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead.")] = False,
) -> None:
    """Print an EDF's parameters, emphasis mode and spread, the mean and std of its emphasis
    density, a table of w(p), and the (mean, std) pairs the family can reach.

    Example: dm-search edf describe dm --param lam=0.5 --param beta=8
    """
    edf = _build(family, param or [], mode, spread, mean, std)
    if json_out:
        typer.echo(json.dumps(_described(edf, points), indent=2))
        return
    console.print(f"[bold]{edf!r}[/bold]  {type(edf).description}")
    console.print(f"config: {edf.to_config()}")
    m, s = edf.mode, edf.spread
    console.print(f"emphasis mode: {'none (constant weight)' if m is None else f'{m:.4f}'}")
    console.print(f"spread: {'-' if s is None else f'{s:g}'}")
    console.print(f"emphasis density (w normalised on [0, 1]): mean {edf.mean:.4f}, "
                  f"std {edf.std:.4f}")
    console.print(_weight_table(edf, points))
    _print_reach(edf.family)


def _described(edf: EDF, points: int) -> dict:
    """What describe prints, as plain values (an infinite weight as null)."""
    import torch

    p = torch.linspace(0.0, 1.0, points, dtype=torch.float64)
    w = [v if math.isfinite(v) else None for v in edf.weight(p).tolist()]
    return {"edf": edf.to_config(), "description": type(edf).description, "mode": edf.mode,
            "spread": edf.spread, "mean": edf.mean, "std": edf.std,
            "weights": [{"p": round(pi, 6), "w": wi} for pi, wi in zip(p.tolist(), w,
                                                                      strict=True)]}


def _weight_table(edf: EDF, points: int) -> Table:
    """w(p) at ``points`` evenly spaced p, with a bar of its share of the peak."""
    import torch

    p = torch.linspace(0.0, 1.0, points, dtype=torch.float64)
    w = edf.weight(p)
    finite = w[torch.isfinite(w)]
    peak = float(finite.max()) if finite.numel() else 1.0
    table = Table()
    table.add_column("p", justify="right")
    table.add_column("w(p)", justify="right")
    table.add_column("w / max", justify="right")
    table.add_column("")
    for pi, wi in zip(p.tolist(), w.tolist(), strict=True):
        rel = wi / peak if peak > 0 else 0.0
        bar = "#" * round(30 * rel) if rel == rel and rel != float("inf") else "inf"
        table.add_row(f"{pi:.2f}", f"{wi:.4g}", f"{rel:.3f}", bar)
    return table


def _print_reach(family: str) -> None:
    """The (mean, std) pairs the family reaches."""
    from dm_search.edf import moments

    kind = moments.has_moments(family)
    region = moments.reach(family)
    lo, hi = region.mean_range
    if kind == "none":
        console.print(f"{family} has no free parameters: one (mean, std) point")
    elif kind == "one":
        console.print(f"{family} reaches mean {lo:.3f} to {hi:.3f}; one free parameter, so "
                      "its std follows from its mean (search it with mean only)")
    else:
        reach = Table(title=f"(mean, std) pairs {family} reaches")
        for col in ("mean", "lowest std", "highest std"):
            reach.add_column(col, justify="right")
        for c, a, b in region.bins:
            reach.add_row(f"{c:.2f}", f"{a:.3f}", f"{b:.3f}")
        console.print(reach)


@edf_app.command("plot")
def edf_plot(
    specs: Annotated[
        list[str],
        typer.Argument(help='EDFs as "family" or "family:k=v,k=v", e.g. cce "dm:lam=0.5,beta=8".'),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Output file: .html (interactive) or .png.")
    ] = Path("edf.html"),
    raw: Annotated[
        bool, typer.Option("--raw", help="Plot w(p) as is instead of scaled to unit area.")
    ] = False,
    title: Annotated[str, typer.Option(help="Figure title.")] = "Emphasis density functions",
) -> None:
    """Plot several EDFs against p in one figure.

    Example: dm-search edf plot cce gce:q=0.7 dm:lam=0.5,beta=8 -o edfs.png
    """
    from dm_search import edf as edf_mod
    from dm_search.results.curves import (
        check_figure_path,
        edf_curves_info,
        plot_edf_curves,
        write_figure,
    )

    try:
        edfs = [edf_mod.from_spec_string(s) for s in specs]
        check_figure_path(output)
    except ValueError as err:
        raise fail(str(err)) from None
    writable(output, "--output")
    fig = plot_edf_curves(edf_curves_info(edfs, normalise=not raw), title=title)
    try:
        path = write_figure(fig, output)
    except OSError as err:
        raise fail(f"cannot write --output {output}: {err}") from None
    console.print(f"wrote {path}")
