"""The `dm-search` command line."""

from __future__ import annotations

import datetime
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dm_search._version import __version__
from dm_search.common.labels import (
    duration,
    edf_repr,
    final_stage_line,
    final_warning,
    fmt,
    lr_range_line,
    race_lines,
)

if TYPE_CHECKING:
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

# Lines are never wrapped by Rich: piped output would break at 80 columns in mid-phrase and
# in the middle of paths, which users copy; the terminal wraps what does not fit.
console = Console(soft_wrap=True)
err_console = Console(stderr=True)


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
        raise _fail(str(err)) from None


@edf_app.command("list")
def edf_list() -> None:
    """List the EDF families with their parameters and defaults."""
    from dm_search import edf as edf_mod

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
) -> None:
    """Print an EDF's parameters, emphasis mode and spread, the mean and std of its emphasis
    density, a table of w(p), and the (mean, std) pairs the family can reach.

    Example: dm-search edf describe dm --param lam=0.5 --param beta=8
    """
    edf = _build(family, param or [], mode, spread, mean, std)
    console.print(f"[bold]{edf!r}[/bold]  {type(edf).description}")
    console.print(f"config: {edf.to_config()}")
    m, s = edf.mode, edf.spread
    console.print(f"emphasis mode: {'none (constant weight)' if m is None else f'{m:.4f}'}")
    console.print(f"spread: {'-' if s is None else f'{s:g}'}")
    console.print(f"emphasis density (w normalised on [0, 1]): mean {edf.mean:.4f}, "
                  f"std {edf.std:.4f}")
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
    from dm_search.edf import moments

    kind = moments.has_moments(edf.family)
    region = moments.reach(edf.family)
    lo, hi = region.mean_range
    if kind == "none":
        console.print(f"{edf.family} has no free parameters: one (mean, std) point")
    elif kind == "one":
        console.print(f"{edf.family} reaches mean {lo:.3f} to {hi:.3f}; one free parameter, so "
                      "its std follows from its mean (search it with mean only)")
    else:
        reach = Table(title=f"(mean, std) pairs {edf.family} reaches")
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
    from dm_search.results.figures import (
        check_figure_path,
        edf_curves_info,
        plot_edf_curves,
        write_figure,
    )

    try:
        edfs = [edf_mod.from_spec_string(s) for s in specs]
        check_figure_path(output)
    except ValueError as err:
        raise _fail(str(err)) from None
    _writable(output, "--output")
    fig = plot_edf_curves(edf_curves_info(edfs, normalise=not raw), title=title)
    try:
        path = write_figure(fig, output)
    except OSError as err:
        raise _fail(f"cannot write --output {output}: {err}") from None
    console.print(f"wrote {path}")


def _writable(path: Path, option: str) -> Path:
    """Refuse an output path that cannot be written before any work is done for it."""
    from dm_search.common.paths import creatable

    if path.is_dir():
        raise _fail(f"{option} {path} is a directory: give a file name in it")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise _fail(f"{option} {path} is not writable")
        return path
    problem = creatable(path)
    if problem:
        raise _fail(f"{option} {path} cannot be written: {problem}")
    return path


_SPEC_KEYS = {"space", "base", "base_set", "n_trials", "baselines", "sampler", "scheduler"}
_TRIAL_KEYS = {"data", "model", "loss", "optim"}


def _kind_hint(path: Path, command: str) -> str:
    """A study spec given to train, or a trial config to submit, fails on every key: say which
    command the file is for instead of listing them ("" when the file is not that mix-up)."""
    import yaml

    try:
        keys = set(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except Exception:  # unreadable: the error already says so
        return ""
    if command == "train" and keys & _SPEC_KEYS:
        return (f"{path} is a study spec, not a trial config: run it with "
                f"`dm-search submit {path}`")
    if command == "submit" and keys & _TRIAL_KEYS and not keys & _SPEC_KEYS:
        return (f"{path} is a trial config, not a study spec: train it with "
                f"`dm-search train {path}`, or name it as a spec's base (see "
                "search_spaces/template.yaml)")
    return ""


def _fail(message: str, code: int = 2) -> typer.Exit:
    # Escaped: messages quote user input like "[cce]", which is not markup. Soft-wrapped: a
    # path in a message must come out whole, so that it can be copied.
    err_console.print(f"[bold red]error:[/bold red] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="Trial config YAML (see examples/).")],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="Override a field: a.b=value (repeatable)."),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the full result as JSON here.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train one configuration (one EDF, or an emphasis schedule) and report clean validation
    and test accuracy.

    Example: dm-search train examples/mnist1d_dm.yaml --set loss.edf.beta=12
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from dm_search.training.config import ConfigError, load_trial_config
    from dm_search.training.data import DatasetUnavailable, prepare_data
    from dm_search.training.trainer import TrialDiverged, check_config, run_trial, total_epochs

    try:
        cfg = load_trial_config(config, set_ or [])
        check_config(cfg)  # a wrong name or folder, found before the data loads
    except ConfigError as err:
        raise _fail(_kind_hint(config, "train") or str(err)) from None
    if json_out is not None:
        _writable(json_out, "--json")  # now, not after the training whose result it holds
    schedule = cfg.loss.build_schedule()
    edf = repr(cfg.loss.build_edf()) if schedule is None else schedule.label()
    console.print(f"[bold]{cfg.data.name}[/bold] noise={cfg.data.noise.kind}:{cfg.data.noise.rate}"
                  f"  model={cfg.model.name}  loss={edf} normalise={cfg.loss.normalise}",
                  soft_wrap=True)
    progress = Progress(
        TextColumn("[bold]epoch"), MofNCompleteColumn(), BarColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, disable=quiet,
    )
    try:
        data = prepare_data(cfg.data)
    except (ConfigError, DatasetUnavailable, OSError, ValueError) as err:
        raise _fail(str(err)) from None
    with progress:
        task = progress.add_task("train", total=total_epochs(cfg, len(data.y_train)), info="")

        def report(m: dict[str, float]) -> None:
            info = (f"loss {m['train_loss']:.3f}  val {fmt(m['val_acc'])}  "
                    f"test {fmt(m['test_acc'])}  mem {fmt(m['memorised'])}")
            if schedule is not None:  # where the emphasis has moved to
                info += f"  mode {fmt(m['mode'], '.3f')}  spread {fmt(m['spread'], '.3g')}"
            progress.update(task, completed=int(m["epoch"]), info=info)

        try:
            result = run_trial(cfg, report=report, data=data)
        except (ConfigError, DatasetUnavailable, OSError, ValueError) as err:
            # OSError: the data cache or a checkpoint could not be written (permissions)
            raise _fail(str(err)) from None
        except TrialDiverged as err:
            raise _fail(f"{err}. Lower optim.lr or pick a gentler EDF.", code=1) from None

    _print_result(result)
    if json_out is not None:
        _write_json(result.to_dict(), json_out)


def _print_result(result: Any) -> None:
    """A finished trial's numbers as a table."""
    final = result.final
    table = Table(title="Trial result")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("best epoch (by clean val acc)", str(result.best_epoch)),
        ("best val acc", fmt(result.best_val_acc)),
        ("test acc at best epoch", fmt(result.test_acc_at_best)),
        ("final test acc", fmt(final["test_acc"])),
        ("final intact train acc", fmt(final["intact_acc"])),
        ("final memorised (noisy labels fitted)", fmt(final["memorised"])),
        ("final p clean / p noisy", f"{fmt(final['p_clean'])} / {fmt(final['p_noisy'])}"),
        ("final noisy weight share", fmt(final["noisy_weight_share"])),
        ("realised noise rate", fmt(result.noise_rate)),
        ("epochs", str(result.epochs_completed)),
        ("wall time s", f"{result.wall_s:.1f}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)


def _json_safe(v: object) -> object:
    """JSON has no NaN or infinity: they become null, so that strict parsers read the output."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json_safe(x) for x in v]
    return v


def _write_json(doc: dict, path: Path) -> None:
    import json

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_json_safe(doc), indent=2))
    except OSError as err:
        raise _fail(f"cannot write --json {path}: {err}", code=1) from None
    console.print(f"wrote {path}")


# ====================================================================== studies
def _coords(t: dict) -> str:
    def f(key: str, spec: str) -> str:
        return "-" if t.get(key) is None else format(t[key], spec)

    return (f"mode {f('mode', '.3f')}  spread {f('spread', '.3g')}  mean {f('mean', '.3f')}  "
            f"std {f('std', '.3f')}")


def _driver_line(driver: dict | None) -> str | None:
    """Whether a study's driver runs, from its heartbeat in the database."""
    if not driver:
        return None
    where = f"pid {driver['pid']} on {driver['host']}"
    ago = f"{duration(driver['age_s'], 0)} ago"
    again = f" Resume it with: {driver['resume']}" if driver.get("resume") else ""
    return {
        "running": f"running: driver {where}, last heartbeat {ago}",
        "gone": f"driver gone: {where} last reported {ago}, while trials ran.{again}",
        "interrupted": f"stopped by a signal {ago}.{again}",
        "failed": f"the driver stopped with an error {ago}.{again}",
    }.get(driver["state"])


def _ramp(schedule: dict) -> str:
    r = schedule["ramp"]
    return f"{r['shape']} ramp {r['start']:g}-{r['end']:g} of the budget"


def _print_summary(summary: dict, driver: bool = False) -> None:
    from dm_search.storage import reasons_in_words

    console.print(
        f"[bold]{summary['name']}[/bold]: {summary['searched']} of {summary['n_trials'] or '?'} "
        f"searched trial(s) + {len(summary.get('references') or [])} reference(s) | "
        f"{reasons_in_words(summary['by_reason'])}"
    )
    best = summary["best"]
    if best:
        edf = edf_repr(best["edf"])
        if best.get("schedule"):
            edf = f"{edf} -> {edf_repr(best['schedule']['edf_end'])} ({_ramp(best['schedule'])})"
        console.print(f"best trial {best['number']}: {edf}  {_coords(best)}  "
                      f"val_acc {best['value']:.4f}  "
                      f"test_acc {fmt(best['test_acc'])}")
    else:
        console.print("best trial: none has run its full budget yet")
    for ref in summary.get("references") or []:
        console.print(f"reference trial {ref['number']} ({ref['stop_reason']}): "
                      f"{edf_repr(ref['edf'])}  {_coords(ref)}  val_acc {fmt(ref['value'])}  "
                      f"test_acc {fmt(ref['test_acc'])}")
    if summary["families"]:
        table = Table(title="by family")
        for col in ("family", "trials", "full budget", "best val acc"):
            table.add_column(col, justify="left" if col == "family" else "right")
        for fam, f in sorted(summary["families"].items(),
                             key=lambda kv: -(kv[1]["best_val_acc"] or -1)):
            table.add_row(fam, str(f["trials"]), str(f["finished"]),
                          fmt(f["best_val_acc"]))
        console.print(table)
    for race_line in race_lines(summary.get("race") or {}):
        console.print(escape(race_line), soft_wrap=True,
                      style="bold yellow" if race_line.startswith("warning") else None)
    final = summary.get("final_stage")
    if final:
        console.print(final_stage_line(final))
        warning = final_warning(final)
        if warning:
            console.print(escape(warning), soft_wrap=True, style="bold yellow")
        lr_line = lr_range_line(final)
        if lr_line:
            console.print(lr_line, soft_wrap=True)
    line = _driver_line(summary.get("driver")) if driver else None
    if line:
        console.print(escape(line), soft_wrap=True)


@app.command()
def submit(
    spec: Annotated[
        str, typer.Argument(help="Study spec YAML (see search_spaces/), or env:VAR to read it "
                                 "from an environment variable.")
    ],
    name: Annotated[str | None, typer.Option(help="Study name (overrides the spec's).")] = None,
    storage: Annotated[
        str | None,
        typer.Option(help="Database URL (default: $DM_SEARCH_STORAGE, the spec's, or "
                          "sqlite:///<study_dir>/studies.db)."),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(help="Ray cluster address (auto, HOST:6379); with --detach the job server "
                          "(http://HOST:8265). Default: a local Ray on this machine."),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an existing study of the same spec "
                                            "(an error if there is none).")
    ] = False,
    resume_if_exists: Annotated[
        bool, typer.Option("--resume-if-exists",
                           help="Continue the study if it exists, else create it.")
    ] = False,
    detach: Annotated[
        bool, typer.Option("--detach", help="Submit as a Ray Job to --address and return.")
    ] = False,
) -> None:
    """Run a search study: Optuna picks each trial's EDF, Ray Tune runs the trials.

    Blocks and shows progress until the study is done (unless --detach). Ctrl-C stops it
    (exit 130; SIGTERM: 143) and prints the command that resumes it; a study stopped or
    killed mid-way continues with --resume, its completed trials kept.

    Example: dm-search submit search_spaces/quickstart.yaml
    """
    from dm_search.storage import Resume
    from dm_search.study.spec import load_spec
    from dm_search.training.config import ConfigError

    if resume and resume_if_exists:
        raise _fail("give --resume or --resume-if-exists, not both")
    mode = (Resume.EXISTING if resume else Resume.EITHER if resume_if_exists else Resume.NEW)

    try:
        study_spec = load_spec(spec, name=name)
    except ConfigError as err:
        raise _fail(_kind_hint(Path(spec), "submit") or str(err)) from None
    from dm_search.driver import cluster, runner, signals
    from dm_search.driver import detach as detached

    if detach:
        if not address:
            raise _fail("--detach needs --address: the cluster's job server, "
                        "e.g. http://127.0.0.1:8265")
        try:
            job = detached.submit_detached(study_spec, address=address, storage_url=storage,
                                           resume=mode)
        except ConfigError as err:
            raise _fail(str(err)) from None
        console.print(f"submitted study {study_spec.name!r} as Ray job {job}")
        console.print(f"follow it with: ray job logs --address {address} --follow {job}")
        return

    def say(msg: str) -> None:
        stamp = datetime.datetime.now().strftime("%H:%M:%S")
        console.print(f"[dim]{stamp}[/dim] {msg}", highlight=False, soft_wrap=True)

    again = _resume_command(spec, name, storage, address)
    try:
        outcome = runner.run_study(study_spec, storage_url=storage, address=address,
                                   resume=mode, say=say, resume_command=again)
    except ConfigError as err:
        raise _fail(str(err)) from None
    except signals.StudyInterrupted as stopped:
        _print_summary(stopped.summary)
        _fail(f"study {study_spec.name!r} stopped by {stopped} ({stopped.marked} running "
              f"trial(s) recorded as interrupted; completed ones are kept). Resume it with: "
              f"{again}")
        # Exit now: everything is on record, and Ray's exit handler could wait a minute on
        # processes the signal has already ended.
        cluster.leave_ray()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(stopped.exit_code)
    except KeyboardInterrupt:  # before the study opened, or a second Ctrl-C
        raise _fail(f"study {study_spec.name!r} stopped by Ctrl-C. Resume it with: {again}",
                    code=130) from None
    _print_summary(outcome.summary)
    _report_failures(outcome.summary)


def _resume_command(spec: str, name: str | None, storage: str | None,
                    address: str | None) -> str:
    """The command that continues this study. A password in --storage is never printed or
    stored: the command then reads the URL from the environment."""
    import shlex

    from dm_search.storage import ENV_STORAGE, mask_url

    args = ["dm-search", "submit", spec, "--resume"]
    if name:
        args += ["--name", name]
    if address:
        args += ["--address", address]
    command = shlex.join(args)
    if storage and mask_url(storage) != storage:
        command += f' --storage "${ENV_STORAGE}"'
    elif storage:
        command += " " + shlex.join(["--storage", storage])
    return command


def _report_failures(summary: dict) -> None:
    """Say how many trials failed and why; exit 1 when no searched trial succeeded."""
    failed = summary.get("failures") or {}
    if not failed:
        return
    n = sum(failed.values())
    reasons = "; ".join(f"{count} x {reason}" for reason, count in failed.items())
    by = summary["by_reason"]
    worked = by.get("finished", 0) + by.get("early-stopped", 0)
    if worked == 0:
        raise _fail(f"every trial failed ({reasons}). If the cause was in the spec, fix it and "
                    "submit under a new --name (a study keeps its spec); if it was outside "
                    "(data, machine), resubmit with --resume: the failed trials stay on record.",
                    code=1)
    err_console.print(f"[yellow]warning:[/yellow] {n} trial(s) failed: {escape(reasons)}",
                      soft_wrap=True)


def _open(storage: str | None) -> tuple[Any, str]:
    from dm_search import storage as st

    url = st.resolve_url(storage, None)
    try:
        return st.open_storage(url, create=False), url
    except st.StorageUnavailable as err:
        raise _fail(str(err)) from None


@app.command()
def status(
    study: Annotated[str | None, typer.Argument(help="Study name (default: all studies).")] = None,
    storage: Annotated[str | None, typer.Option(help="Database URL.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead.")] = False,
) -> None:
    """Show a study's progress, best trial and family breakdown (reads only the database)."""
    import json

    from dm_search import storage as st

    studies, url = _studies(storage, study)
    summaries = [st.study_summary(s) for s in studies]
    if json_out:
        doc = summaries if study is None else summaries[0]
        typer.echo(json.dumps(_json_safe(doc), indent=2, allow_nan=False))
        return
    if not summaries:
        console.print(f"no studies in {st.mask_url(url)}")
    for s in summaries:
        _print_summary(s, driver=True)


@app.command("list")
def list_studies(
    storage: Annotated[str | None, typer.Option(help="Database URL.")] = None,
) -> None:
    """List the studies in the database with their progress and best validation accuracy."""
    from dm_search import storage as st

    studies, url = _studies(storage)
    table = Table(title=f"studies in {st.mask_url(url)}")
    for col in ("study", "searched trials", "full budget", "best val acc", "best EDF",
                "created"):
        table.add_column(col)
    for s in studies:
        summary = st.study_summary(s)
        best = summary["best"]
        table.add_row(
            s.study_name, f"{summary['searched']}/{summary['n_trials'] or '?'}",
            str(sum(f["finished"] for f in summary["families"].values())),
            fmt(best["value"]) if best else "-",
            edf_repr(best["edf"]) if best else "-",
            str(summary["created"] or "-"),
        )
    console.print(table)


def _studies(storage: str | None, only: str | None = None) -> tuple[list[Any], str]:
    """The studies in the database (or just ``only``, refused clearly when it is not there)."""
    import optuna

    from dm_search import storage as st

    store, url = _open(storage)
    names = [s.study_name for s in store.get_all_studies()]
    if only is not None and only not in names:
        raise _fail(f"no study named {only!r} in {st.mask_url(url)}; studies there: "
                    f"{', '.join(names) or 'none'}")
    return [optuna.load_study(study_name=n, storage=store)
            for n in ([only] if only else names)], url


def _load_study(study: str, storage: str | None) -> Any:
    return _studies(storage, study)[0][0]


@app.command()
def report(
    study: Annotated[str, typer.Argument(help="Study name.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write.")] = Path(
        "report.html"),
    storage: Annotated[str | None, typer.Option(help="Database URL.")] = None,
    static: Annotated[Path | None, typer.Option(
        "--static", help="Also write every figure into this folder as SVG and PNG "
        "(for a paper).")] = None,
) -> None:
    """Write one self-contained HTML report of a study (works offline).

    Set-up and provenance (data, nominal and measured noise, budget, wall time, hardware,
    versions, git commit); the result: the best EDF, the final stage with memorisation, and
    learning curves of the best EDF against CE over the whole budget; the search: history,
    families, the best EDF of each family against CE, the accuracy planes, importances and
    parallel coordinates per family; and tables of every family and every trial.
    """
    from dm_search.common.paths import folder_problem
    from dm_search.results.report import write_report

    if output.suffix.lower() not in (".html", ".htm"):
        # The report is HTML whatever the name says: a report.pdf would be HTML named .pdf.
        raise _fail(f"--output {output}: the report is one HTML file; give a .html name "
                    f"(e.g. {output.with_suffix('.html')})")
    _writable(output, "--output")
    if static is not None:
        # Made now, not after the report: a folder that cannot be made is the mistake to name.
        problem = folder_problem(static)
        if problem is None:
            try:
                static.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                problem = err
        if problem is not None:
            why = getattr(problem, "strerror", None) or str(problem)
            raise _fail(f"--static {static}: cannot make this folder ({why}); give a folder "
                        "this user can write")
    loaded = _load_study(study, storage)
    try:
        path = write_report(loaded, output, static=static)
    except OSError as err:
        raise _fail(f"cannot write the report: {err}") from None
    console.print(f"wrote {path} (open it in any browser; it needs no network)")
    if static is not None:
        console.print(f"wrote every figure to {static}/ as <name>.svg and <name>.png")


@app.command()
def export(
    study: Annotated[str, typer.Argument(help="Study name.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write.")] = Path(
        "best_edf.yaml"),
    fmt: Annotated[
        str | None, typer.Option("--format", help="yaml or json (default: from the suffix).")
    ] = None,
    trial: Annotated[
        int | None, typer.Option(help="Export this trial instead of the best one.")
    ] = None,
    storage: Annotated[str | None, typer.Option(help="Database URL.")] = None,
) -> None:
    """Export the best EDF (or trial N's) as a file that `dm_search.load_loss` reads.

    Only trials that ran their full budget are eligible. Example:
    dm-search export quickstart -o best_edf.yaml
    """
    from dm_search.results.export import ExportError, export_trial, write_export

    if fmt not in (None, "yaml", "json"):
        raise _fail(f"--format must be yaml or json; got {fmt!r}")
    _writable(output, "--output")
    if fmt is None and output.suffix.lower() not in (".yaml", ".yml", ".json"):
        raise _fail(f"--output {output}: give a .yaml or .json name, or say --format yaml|json")
    try:
        doc = export_trial(_load_study(study, storage), trial)
    except ExportError as err:
        raise _fail(str(err)) from None
    try:
        path = write_export(doc, output, fmt)  # type: ignore[arg-type]
    except OSError as err:
        raise _fail(f"cannot write --output {output}: {err}") from None
    from dm_search.edf import EDF
    from dm_search.training.recipe import Recipe

    edf = repr(EDF.from_config(doc["edf"]))
    if doc.get("schedule"):
        edf += (f" -> {EDF.from_config(doc['schedule']['edf_end'])!r} "
                f"({_ramp(doc['schedule'])})")
    console.print(f"wrote {path}: {edf}, normalise={doc['loss']['normalise']}, val_acc "
                  f"{doc['result']['val_acc']:.4f} (study {study}, trial "
                  f"{doc['provenance']['trial']})")
    if doc.get("schedule"):
        console.print("its EDF moves over training: call loss_fn.set_step(step, total_steps) "
                      "before each step", soft_wrap=True)
    for warning in _export_warnings(doc["result"]):
        err_console.print(escape(f"warning: {warning}"), soft_wrap=True, style="bold yellow")
    console.print(f"use it with its recipe ({Recipe.from_dict(doc['recipe']).describe()}): "
                  f"from dm_search import load_loss, load_recipe; loss_fn = "
                  f"load_loss({str(path)!r}); recipe = load_recipe({str(path)!r})",
                  soft_wrap=True)


def _export_warnings(result: dict) -> list[str]:
    """What the export's record says about the EDF's steadiness over seeds."""
    out = []
    race = result.get("race") or {}
    if race.get("unstable"):
        out.append(f"its race runs disagree by {race['spread_points']:.1f} points of validation "
                   "accuracy: its result depends on the seed")
    if result.get("final_unstable"):
        accs = ", ".join(f"{100 * a:.1f}" for a in result.get("final_test_accs") or [])
        out.append(f"its final-stage seeds disagree by {result['final_spread_points']:.1f} "
                   f"points of test accuracy ({accs}%): its result depends on the seed")
    return out


@app.command()
def dashboard(
    storage: Annotated[str | None, typer.Option(help="Database URL.")] = None,
    host: Annotated[
        str, typer.Option(help="Interface to bind; 0.0.0.0 exposes it to the network.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (1-65535).")] = 8080,
    artifact_dir: Annotated[
        Path | None,
        typer.Option(help="Trial artifacts (default: the folders each study recorded).")
    ] = None,
) -> None:
    """Start optuna-dashboard on the study database: live trials, learning curves, EDF plots.

    Each study records where its trial images are (artifacts/ in its study_dir), so the
    dashboard finds them from the database alone.

    Example: dm-search dashboard   (then open http://127.0.0.1:8080/)
    """
    import socket

    if not 1 <= port <= 65535:
        raise _fail(f"--port must be between 1 and 65535; got {port}")
    try:  # refused now, before anything says it is listening
        with socket.create_server((host, port)):
            pass
    except OSError as err:
        raise _fail(f"cannot listen on {host}:{port}: {err.strerror or err}. Pick another "
                    "--port (or --host)") from None

    from optuna_dashboard import run_server

    from dm_search import storage as st
    from dm_search.results.dashboard import ArtifactDirs

    store, url = _open(storage)
    dirs = [artifact_dir] if artifact_dir is not None else _artifact_dirs(store, url)
    found = [d for d in dict.fromkeys(dirs) if d.is_dir()]
    if artifact_dir is not None and not found:
        raise _fail(f"--artifact-dir {artifact_dir} is not a folder")
    console.print(f"optuna-dashboard for {st.mask_url(url)} on http://{host}:{port}/ "
                  "(Ctrl-C to stop)")
    run_server(store, host=host, port=port, artifact_store=ArtifactDirs(found) if found else None)


def _artifact_dirs(store: Any, url: str) -> list[Path]:
    """Each study's recorded artifact folder; a missing one is a warning, not an error."""
    from dm_search import storage as st

    dirs = []
    for s in store.get_all_studies():
        where = st.study_locations(s.system_attrs).get("artifacts")
        if where is None:
            continue
        if Path(where).is_dir():
            dirs.append(Path(where))
        else:
            err_console.print(
                f"[yellow]warning:[/yellow] study {escape(s.study_name)}'s trial images were in "
                f"{escape(where)}, which is missing (moved or deleted): its trials show no "
                "images. Point --artifact-dir at the folder if it moved.", soft_wrap=True)
    beside = st.artifact_dir(url)  # studies written before their folders were recorded
    if beside is not None and beside.is_dir():
        dirs.append(beside)
    return dirs


def main() -> None:
    app()


if __name__ == "__main__":
    main()
