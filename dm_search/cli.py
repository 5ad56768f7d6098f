"""The `dm-search` command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dm_search import __version__
from dm_search import edf as edf_mod
from dm_search.edf import EDF

app = typer.Typer(
    name="dm-search",
    help=(
        "Search the example weighting (emphasis density function, EDF) that trains the most "
        "robust classifier under noisy labels, with Derivative Manipulation."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
edf_app = typer.Typer(
    help="Inspect and plot emphasis density functions (EDFs).", no_args_is_help=True
)
app.add_typer(edf_app, name="edf")

console = Console()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dm-search {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """dm-search: Derivative Manipulation example-weighting search."""


def _parse_params(items: list[str]) -> dict[str, float]:
    params: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected key=value, got {item!r} (e.g. --param beta=8)")
        try:
            params[key.strip()] = float(value)
        except ValueError:
            raise typer.BadParameter(f"{key.strip()}={value!r} is not a number") from None
    return params


def _build(
    family: str, params: list[str], mode: float | None, spread: float | None
) -> EDF:
    try:
        if mode is not None or spread is not None:
            if params:
                raise ValueError("give either --param or --mode/--spread, not both")
            if mode is None:
                raise ValueError("--spread needs --mode too")
            return EDF.from_mode_spread(family, mode=mode, spread=spread)
        return EDF(family, **_parse_params(params))
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None


@edf_app.command("list")
def edf_list() -> None:
    """List the EDF families with their parameters and defaults."""
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
    points: Annotated[int, typer.Option(min=2, help="Rows in the w(p) table.")] = 11,
) -> None:
    """Print an EDF's parameters, emphasis mode and spread, and a table of w(p).

    Example: dm-search edf describe dm --param lam=0.5 --param beta=8
    """
    edf = _build(family, param or [], mode, spread)
    console.print(f"[bold]{edf!r}[/bold]  {type(edf).description}")
    console.print(f"config: {edf.to_config()}")
    m, s = edf.mode, edf.spread
    console.print(f"emphasis mode: {'none (constant weight)' if m is None else f'{m:.4f}'}")
    console.print(f"spread: {'-' if s is None else f'{s:g}'}")
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
    console.print(table)


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
    from dm_search.report import edf_curves_info, plot_edf_curves, write_figure

    try:
        edfs = [edf_mod.from_spec_string(s) for s in specs]
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="SPECS") from None
    fig = plot_edf_curves(edf_curves_info(edfs, normalise=not raw), title=title)
    try:
        path = write_figure(fig, output)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--output") from None
    console.print(f"wrote {path}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
