"""Reading a study spec: from a file (its ``base`` a trial config beside it, ``base_set``
applied), from a shipped spec's name (``quickstart``), or from an environment variable (how a
detached study reaches the cluster without any file)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dm_search.study.spec import StudySpec
from dm_search.training.config import (
    ConfigError,
    apply_overrides,
    format_validation_error,
    read_yaml,
)

__all__ = ["ENV_PREFIX", "ENV_STUDY_DIR", "load_spec", "shipped_specs", "spec_from_dict",
           "spec_path"]


ENV_PREFIX = "env:"
ENV_STUDY_DIR = "DM_SEARCH_STUDY_DIR"


def shipped_specs() -> dict[str, Path]:
    """The study specs that ship with dm-search, by name (quickstart, paper_grid, ...)."""
    from importlib.resources import files

    folder = Path(str(files("dm_search.shipped") / "search_spaces"))
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def spec_path(text: str | Path) -> Path:
    """A spec's file: the path as given where it exists, else a shipped spec of that name."""
    path = Path(text)
    if path.exists() or path.suffix or len(path.parts) != 1:
        return path
    shipped = shipped_specs()
    if str(text) in shipped:
        return shipped[str(text)]
    raise ConfigError(f"spec {str(text)!r}: no such file, and no shipped spec of that name; the "
                      f"shipped ones are {', '.join(shipped)} (or run `dm-search init` to write "
                      "a starter spec)")


def load_spec(path: str | Path, *, name: str | None = None,
              trainer: str | None = None) -> StudySpec:
    """Read a study spec; ``base`` may be a path to a trial config (relative to the spec).

    ``path`` may name a shipped spec (``quickstart``). ``env:NAME`` reads the spec's YAML from
    the environment variable NAME (how a detached study reaches the cluster without any
    file). ``name`` and ``trainer`` (a training loop's reference) replace the spec's."""
    from_env = str(path).startswith(ENV_PREFIX)
    if not from_env:
        path = spec_path(path)
    if str(path).startswith(ENV_PREFIX):
        var = str(path)[len(ENV_PREFIX):]
        if var not in os.environ:
            raise ConfigError(f"spec {path}: environment variable {var} is not set")
        folder = Path(tempfile.mkdtemp(prefix="dm-search-spec-"))
        (folder / "spec.yaml").write_text(os.environ[var])
        path = folder / "spec.yaml"
    path = Path(path)
    data = read_yaml(path, sections="name, base, space", example="search_spaces/quickstart.yaml")
    # A spec read from the environment (a detached study) runs in the folder its code was
    # shipped to; a file's relative paths are relative to the file.
    return spec_from_dict(data, name=name, trainer=trainer,
                          folder=Path.cwd() if from_env else path.parent, source=str(path))


def spec_from_dict(data: dict[str, Any], *, name: str | None = None, trainer: str | None = None,
                   folder: Path | None = None, source: str = "spec") -> StudySpec:
    """A study spec from its mapping, as :func:`load_spec` reads a file's: ``base`` may be a
    trial config's path and ``code`` a folder, both relative to ``folder`` (default: the
    working directory)."""
    data = dict(data)
    folder = folder or Path.cwd()
    base = data.get("base")
    if isinstance(base, str):
        base_path = Path(base)
        if not base_path.is_absolute() and not base_path.is_file():
            base_path = folder / base
        if not base_path.exists():  # a folder is read_yaml's to explain
            raise ConfigError(f"{source}: base: the trial config {base!r} does not exist "
                              f"(looked in {base_path}); give a path relative to the spec, or "
                              "the config inline")
        try:
            data["base"] = read_yaml(base_path)
        except ConfigError as err:
            raise ConfigError(f"{source}: base: {err}") from None
    if "base_set" in data:
        overrides = data.pop("base_set")
        if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
            raise ConfigError(f"{source}: base_set must be a list of a.b=value strings, e.g. "
                              f"base_set: [optim.epochs=30]; got {overrides!r}")
        if isinstance(data.get("base"), dict):
            try:
                data["base"] = apply_overrides(data["base"], overrides)
            except ConfigError as err:
                raise ConfigError(f"{source}: base_set: {err}") from None
    if trainer is not None:
        base = data.get("base")
        data["base"] = {**(base if isinstance(base, dict) else {}), "trainer": trainer}
    code = data.get("code")
    if isinstance(code, str):
        resolved = (folder / Path(code).expanduser()).resolve()
        if not resolved.is_dir():
            raise ConfigError(f"{source}: code: {code!r} is not a folder (looked in "
                              f"{resolved}); give the folder of your trainer's module, relative "
                              "to the spec")
        data["code"] = str(resolved)
    if name is not None:
        data["name"] = name
    if os.environ.get(ENV_STUDY_DIR):
        # Deployments put every study's files on one shared volume, whatever the spec says.
        data["study_dir"] = os.environ[ENV_STUDY_DIR]
    try:
        return StudySpec.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
