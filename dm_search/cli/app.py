"""The command line's application and what its commands share: the consoles, the one way
to fail with a message and an exit code, and opening the study database."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from dm_search._version import __version__

__all__ = ["app", "console", "edf_app", "err_console"]

# What --help shows after an option that takes a value: a word a person reads, never a type
# placeholder such as <str>; flags show nothing.
_LABELS = {"storage": "URL", "address": "ADDRESS", "name": "NAME", "output": "FILE",
           "static": "DIR", "json_out": "FILE", "set_": "KEY=VALUE", "param": "KEY=VALUE",
           "fmt": "yaml|json", "trial": "N", "host": "HOST", "port": "PORT",
           "artifact_dir": "DIR", "points": "N", "title": "TEXT", "config": "FILE",
           "spec": "SPEC", "study": "STUDY", "folder": "DIR", "family": "FAMILY",
           "specs": "EDF..."}


def _label(param: Any, shown: str | None) -> str:
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return ""
    if param.name in _LABELS:
        return _LABELS[param.name]
    bare = (shown or "").strip("<>")
    return {"int": "N", "int range": "N", "float": "NUMBER", "path": "PATH",
            "list[str]": "TEXT..."}.get(bare, bare.upper() or "TEXT")


def _readable(params: list[Any]) -> list[Any]:
    for param in params:
        if getattr(param, "dm_search_readable", False):
            continue
        typed = param.display_type_rich

        # The rich help asks each parameter how to show its value: answer with a label.
        def show(ctx: Any, param: Any = param, typed: Any = typed) -> str:
            return _label(param, typed(ctx))

        param.display_type_rich = show
        param.dm_search_readable = True
    return params


class _Group(typer.core.TyperGroup):
    """A command group whose help, and its commands' help, show readable value names."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _readable(super().get_params(ctx))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None and not isinstance(cmd, typer.core.TyperGroup):
            _readable(cmd.get_params(ctx))
        return cmd


app = typer.Typer(
    name="dm-search",
    help=(
        "Search the example weighting (emphasis density function, EDF) that trains the most "
        "robust classifier under noisy labels, with Derivative Manipulation."
    ),
    no_args_is_help=True,
    cls=_Group,
    pretty_exceptions_enable=False,
)
edf_app = typer.Typer(
    help="Inspect and plot emphasis density functions (EDFs).", no_args_is_help=True,
    cls=_Group,
)
app.add_typer(edf_app, name="edf")

# Lines are never wrapped by Rich: piped output would break at 80 columns in mid-phrase and
# in the middle of paths, which users copy; the terminal wraps what does not fit. Output to a
# pipe or a file has no width: a table there takes the width of its content, never cut.
# Rich honours NO_COLOR (and FORCE_COLOR) itself.
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 100_000)
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


def writable(path: Path, option: str) -> Path:
    """Refuse an output path that cannot be written before any work is done for it."""
    from dm_search.common.paths import creatable

    if path.is_dir():
        raise fail(f"{option} {path} is a directory: give a file name in it")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise fail(f"{option} {path} is not writable")
        return path
    problem = creatable(path)
    if problem:
        raise fail(f"{option} {path} cannot be written: {problem}")
    return path


SPEC_KEYS = {"space", "base", "base_set", "n_trials", "baselines", "sampler", "scheduler"}
TRIAL_KEYS = {"data", "model", "loss", "optim"}


def kind_hint(path: Path, command: str) -> str:
    """A study spec given to train, or a trial config to submit, fails on every key: say which
    command the file is for instead of listing them ("" when the file is not that mix-up)."""
    from dm_search.training.config import safe_load_bounded

    try:
        keys = set(safe_load_bounded(path.read_text(encoding="utf-8"), str(path)) or {})
    except Exception:  # unreadable: the error already says so
        return ""
    if command == "train" and keys & SPEC_KEYS:
        return (f"{path} is a study spec, not a trial config: run it with "
                f"`dm-search submit {path}`")
    if command == "submit" and keys & TRIAL_KEYS and not keys & SPEC_KEYS:
        return (f"{path} is a trial config, not a study spec: train it with "
                f"`dm-search train {path}`, or name it as a spec's base (see "
                "search_spaces/template.yaml)")
    return ""


def fail(message: str, code: int = 2) -> typer.Exit:
    # Escaped: messages quote user input like "[cce]", which is not markup. Soft-wrapped: a
    # path in a message must come out whole, so that it can be copied.
    err_console.print(f"[bold red]error:[/bold red] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


def json_safe(v: object) -> object:
    """JSON has no NaN or infinity: they become null, so that strict parsers read the output."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [json_safe(x) for x in v]
    return v


def write_json(doc: dict, path: Path) -> None:
    import json

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(json_safe(doc), indent=2))
    except OSError as err:
        raise fail(f"cannot write --json {path}: {err}", code=1) from None
    console.print(f"wrote {path}")


def open_store(storage: str | None) -> tuple[Any, str]:
    from dm_search import storage as st

    url = st.resolve_url(storage, None)
    try:
        return st.open_storage(url, create=False), url
    except st.StorageUnavailable as err:
        raise fail(str(err)) from None


def studies_in(storage: str | None, only: str | None = None) -> tuple[list[Any], str]:
    """The studies in the database (or just ``only``, refused clearly when it is not there)."""
    import optuna

    from dm_search import storage as st

    store, url = open_store(storage)
    names = [s.study_name for s in store.get_all_studies()]
    if only is not None and only not in names:
        raise fail(f"no study named {only!r} in {st.mask_url(url)}; studies there: "
                    f"{', '.join(names) or 'none'}")
    return [optuna.load_study(study_name=n, storage=store)
            for n in ([only] if only else names)], url


def load_study(study: str, storage: str | None) -> Any:
    return studies_in(storage, study)[0][0]
