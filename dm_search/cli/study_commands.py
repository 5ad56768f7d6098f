"""`dm-search submit | status | list`: run a study, and see where studies stand."""

from __future__ import annotations

import datetime
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from dm_search.common.labels import (
    edf_repr,
    fmt,
)

if TYPE_CHECKING:
    from dm_search.storage import Resume
    from dm_search.study.spec import StudySpec

from dm_search.cli.app import app, console, fail, json_safe, kind_hint, studies_in
from dm_search.cli.summary import print_summary, report_failures

__all__ = ["list_studies", "status", "submit"]


@app.command()
def submit(
    spec: Annotated[
        str, typer.Argument(help="Study spec YAML, a shipped spec's name (quickstart, "
                                 "paper_grid, ...), or env:VAR to read it from an environment "
                                 "variable.")
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
    from dm_search.study.reading import load_spec
    from dm_search.training.config import ConfigError

    if resume and resume_if_exists:
        raise fail("give --resume or --resume-if-exists, not both")
    mode = (Resume.EXISTING if resume else Resume.EITHER if resume_if_exists else Resume.NEW)

    try:
        study_spec = load_spec(spec, name=name)
    except ConfigError as err:
        raise fail(kind_hint(Path(spec), "submit") or str(err)) from None
    if detach:
        _submit_detached(study_spec, address, storage, mode)
        return
    _run_here(study_spec, _resume_command(spec, name, storage, address), storage, address, mode)


def _submit_detached(study_spec: StudySpec, address: str | None, storage: str | None,
                     mode: Resume) -> None:
    from dm_search.driver import detach as detached
    from dm_search.training.config import ConfigError

    if not address:
        raise fail("--detach needs --address: the cluster's job server, "
                   "e.g. http://127.0.0.1:8265")
    try:
        job = detached.submit_detached(study_spec, address=address, storage_url=storage,
                                       resume=mode)
    except ConfigError as err:
        raise fail(str(err)) from None
    console.print(f"submitted study {study_spec.name!r} as Ray job {job}")
    console.print(f"follow it with: ray job logs --address {address} --follow {job}")


def _run_here(study_spec: StudySpec, again: str, storage: str | None, address: str | None,
              mode: Resume) -> None:
    """Run the study from this process, showing progress; ``again`` resumes it."""
    from dm_search.driver import cluster, runner, signals
    from dm_search.training.config import ConfigError

    def say(msg: str) -> None:
        stamp = datetime.datetime.now().strftime("%H:%M:%S")
        console.print(f"[dim]{stamp}[/dim] {msg}", highlight=False, soft_wrap=True)

    try:
        outcome = runner.run_study(study_spec, storage_url=storage, address=address,
                                   resume=mode, say=say, resume_command=again)
    except ConfigError as err:
        raise fail(str(err)) from None
    except signals.StudyInterrupted as stopped:
        print_summary(stopped.summary)
        fail(f"study {study_spec.name!r} stopped by {stopped} ({stopped.marked} running "
             f"trial(s) recorded as interrupted; completed ones are kept). Resume it with: "
             f"{again}")
        # Exit now: everything is on record, and Ray's exit handler could wait a minute on
        # processes the signal has already ended.
        cluster.leave_ray()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(stopped.exit_code)
    except KeyboardInterrupt:  # before the study opened, or a second Ctrl-C
        raise fail(f"study {study_spec.name!r} stopped by Ctrl-C. Resume it with: {again}",
                   code=130) from None
    print_summary(outcome.summary)
    report_failures(outcome.summary)


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


@app.command()
def status(
    study: Annotated[str | None, typer.Argument(help="Study name (default: all studies).")] = None,
    storage: Annotated[str | None, typer.Option(help="Database URL.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead.")] = False,
) -> None:
    """Show a study's progress, best trial and family breakdown (reads only the database)."""
    import json

    from dm_search import storage as st

    studies, url = studies_in(storage, study)
    summaries = [st.study_summary(s) for s in studies]
    if json_out:
        doc = summaries if study is None else summaries[0]
        typer.echo(json.dumps(json_safe(doc), indent=2, allow_nan=False))
        return
    if not summaries:
        console.print(f"no studies in {st.mask_url(url)}")
    for s in summaries:
        print_summary(s, driver=True)


@app.command("list")
def list_studies(
    storage: Annotated[str | None, typer.Option(help="Database URL.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead.")] = False,
) -> None:
    """List the studies in the database with their progress and best validation accuracy."""
    import json

    from dm_search import storage as st

    studies, url = studies_in(storage)
    if json_out:
        rows = []
        for s in studies:
            summary = st.study_summary(s)
            best = summary["best"]
            rows.append({"study": s.study_name, "searched": summary["searched"],
                         "n_trials": summary["n_trials"],
                         "full_budget": sum(f["finished"] for f in summary["families"].values()),
                         "best_val_acc": best["value"] if best else None,
                         "best_edf": best["edf"] if best else None,
                         "created": summary["created"]})
        typer.echo(json.dumps(json_safe(rows), indent=2, allow_nan=False))
        return
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
