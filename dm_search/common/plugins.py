"""The user's own code, named in a config: ``"my_module:attr"`` references, entry points of
installed packages, and the checks that a function can be called the way dm-search calls it.

A reference is resolved the way ``uvicorn main:app`` resolves one: the working directory (and
any folder given with ``code:``) is searched before the installed packages.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "ENV_CODE",
    "UserCodeError",
    "add_code_paths",
    "call_problem",
    "describe_error",
    "entry_point",
    "entry_point_names",
    "is_reference",
    "load_reference",
    "provide",
    "provided",
    "reference_of",
    "resolve",
    "shipped_to_source",
]


class UserCodeError(ValueError):
    """A ``module:attr`` reference that cannot be loaded; the message says why and the fix."""


def is_reference(name: str) -> bool:
    """Whether ``name`` names the user's code (``package.module:attr``), not a built-in."""
    return ":" in name


# The folders add_code_paths put on the import path, for the message when a module is missing.
_SEARCHED: list[str] = []


def add_code_paths(paths: Iterable[str | Path] = ()) -> None:
    """Put ``paths`` (and the working directory) first on ``sys.path``, once each."""
    for folder in [*paths, Path.cwd()][::-1]:
        text = str(Path(folder).resolve())
        if text not in _SEARCHED:
            _SEARCHED.insert(0, text)
        if text not in sys.path:
            sys.path.insert(0, text)


# Functions handed over as objects (the Python API, a notebook's function) under their
# reference, so that a config still names them by a string.
_PROVIDED: dict[str, Any] = {}


def provide(ref: str, obj: Any) -> None:
    """Make ``obj`` what ``ref`` resolves to in this process."""
    _PROVIDED[ref] = obj


def provided() -> dict[str, Any]:
    """What :func:`provide` was given in this process, by reference."""
    return dict(_PROVIDED)


def reference_of(fn: Any) -> str:
    """The ``module:qualname`` reference of a function."""
    module = getattr(fn, "__module__", None) or "__main__"
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if not name or "<" in name:
        raise UserCodeError(f"{fn!r} has no importable name (a lambda or a nested function): "
                            "define it at the top level of a module or script")
    return f"{module}:{name}"


def load_reference(ref: str, what: str) -> Any:
    """The object ``ref`` ("package.module:attr.sub") names; ``what`` says what it is for in
    errors ("trainer", "model factory", "dataset loader")."""
    if ref in _PROVIDED:
        return _PROVIDED[ref]
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise UserCodeError(f"{what} {ref!r} must look like module:function (e.g. "
                              "my_module:train), the module importable from the working "
                              "directory, the spec's code folder or an installed package")
    add_code_paths()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is not None and module_name.startswith(err.name):
            raise UserCodeError(
                f"{what} {ref!r}: no module named {module_name!r} (searched "
                f"{', '.join(_SEARCHED)} and the installed packages). Check the module's name; "
                "run from the folder that holds it (a study spec names it in code:), or "
                "install it") from None
        raise UserCodeError(f"{what} {ref!r}: importing {module_name} failed: {err}") from None
    except Exception as err:
        raise UserCodeError(f"{what} {ref!r}: importing {module_name} raised "
                              f"{type(err).__name__}: {err}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            # What the module defines itself, not what it imported.
            public = sorted(n for n, v in vars(module).items() if not n.startswith("_")
                            and callable(v) and getattr(v, "__module__", None) == module_name)
            public = public[:20] + (["..."] if len(public) > 20 else [])
            raise UserCodeError(f"{what} {ref!r}: module {module_name} has no {attr!r}"
                                  + (f"; it has {', '.join(public)}" if public else ""))
        obj = getattr(obj, part)
    if not callable(obj):
        raise UserCodeError(f"{what} {ref!r} is a {type(obj).__name__}, not a function")
    return obj


def entry_point(group: str, name: str) -> Any | None:
    """The object an installed package registers as ``name`` in entry-point ``group``."""
    from importlib.metadata import entry_points

    for ep in entry_points(group=group):
        if ep.name == name:
            return ep.load()
    return None


def entry_point_names(group: str) -> list[str]:
    from importlib.metadata import entry_points

    return sorted(ep.name for ep in entry_points(group=group))


def resolve(name: str, what: str, builtin: Callable[[str], Any], group: str) -> Any:
    """A built-in by ``name``, a ``module:attr`` reference, or an installed package's entry
    point in ``group``; an unknown name lists all three kinds."""
    if is_reference(name):
        return load_reference(name, what)
    try:
        return builtin(name)
    except ValueError as err:
        found = entry_point(group, name)
        if found is not None:
            return found
        installed = entry_point_names(group)
        more = f" Installed ({group}): {', '.join(installed)}." if installed else ""
        raise ValueError(f"{err}{more} Your own: module:function (e.g. my_module:{name}).") \
            from None


def call_problem(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> \
        str | None:
    """Why ``fn(*args, **kwargs)`` cannot be called (wrong parameters), or None."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None  # a builtin without a signature: let the call say
    try:
        sig.bind(*args, **kwargs)
    except TypeError as err:
        return f"{err} (its signature is {getattr(fn, '__name__', 'it')}{sig})"
    return None


def describe_error(err: BaseException) -> str:
    """``Type: message (file:line)``: the exception's last line and where it was raised in the
    user's own code (the innermost frame outside the installed packages, the standard library
    and dm-search; the innermost frame when there is none), what a user needs to find their
    bug without the whole traceback."""
    import sysconfig
    import traceback

    text = str(err).strip().splitlines()
    line = f"{type(err).__name__}: {text[-1]}" if text else type(err).__name__
    frames = traceback.extract_tb(err.__traceback__) if err.__traceback__ else []
    if not frames:
        return line
    theirs = [str(Path(p).resolve()) for p in
              {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}]
    ours = str(Path(__file__).resolve().parents[1])

    def is_users(filename: str) -> bool:
        path = str(Path(filename).resolve())
        return not any(path.startswith(p + "/") for p in [*theirs, ours])

    where = next((f for f in reversed(frames) if is_users(f.filename)), None)
    if where is None:
        return line  # raised by dm-search itself: its own line would only mislead
    return f"{line} ({shipped_to_source(where.filename)}:{where.lineno})"


ENV_CODE = "DM_SEARCH_CODE"


def shipped_to_source(filename: str) -> str:
    """A file in the copy of the code folder Ray shipped to a worker, as the path of the file
    it was copied from (``$DM_SEARCH_CODE``, set with the shipping): the copy's path is long and
    gone after the run."""
    import os
    import re

    source = os.environ.get(ENV_CODE)
    if not source:
        return filename
    return re.sub(r"^.*/working_dir_files/_ray_pkg_[^/]+", source.rstrip("/"), filename)
