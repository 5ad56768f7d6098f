"""The exported EDF file: its format and versions, writing it, and reading it back as a DMLoss
(``load_loss``) with the training recipe it won with (``load_recipe``).

    from dm_search import load_loss, load_recipe
    loss_fn = load_loss("best_edf.yaml")      # a DMLoss with the searched EDF
    recipe = load_recipe("best_edf.yaml")     # the optimiser and schedule it won with
    loss = loss_fn(model(x), y); loss.backward()

An EDF that moves over training (an emphasis schedule) is exported with its ``schedule:``
(where it ends and its ramp); ``load_loss`` then returns a loss that follows it once told the
progress, ``loss_fn.set_step(step, total_steps)`` before each step."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Literal

import yaml

from dm_search._version import __version__
from dm_search.edf import EDF, EDFSchedule
from dm_search.loss import NORMALISATIONS, DMLoss
from dm_search.training.config import ConfigError, dump_yaml
from dm_search.training.recipe import Recipe

__all__ = [
    "READS",
    "SCHEDULE_VERSION",
    "SCHEMA_KEY",
    "SCHEMA_VERSION",
    "ExportError",
    "load_loss",
    "load_recipe",
    "read_export",
    "write_export",
]

SCHEMA_KEY = "dm_search_edf"
# 2: the file carries the training recipe. Version 1 files (no recipe) still load.
SCHEMA_VERSION = 2
# 3: the EDF moves over training (schedule:). Written only for schedules, so that a fixed
# EDF's file still loads in a dm-search that predates schedules; one that does not know
# schedules refuses a version-3 file instead of training with its start EDF alone.
SCHEDULE_VERSION = 3
READS = (1, 2, 3)


class ExportError(ConfigError):
    """Nothing can be exported as asked, or a file is not a dm-search EDF export."""


def write_export(doc: dict[str, Any], path: str | Path,
                 fmt: Literal["yaml", "json"] | None = None) -> Path:
    """Write the document; the format follows ``fmt`` or the file's suffix (yaml default)."""
    path = Path(path)
    fmt = fmt or ("json" if path.suffix.lower() == ".json" else "yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "json":
        path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    else:
        header = ("# Best EDF found by dm-search. Use it as a loss, with its recipe:\n"
                  "#   from dm_search import load_loss, load_recipe\n"
                  f"#   loss_fn = load_loss(\"{path.name}\"); "
                  f"recipe = load_recipe(\"{path.name}\")\n")
        path.write_text(header + dump_yaml(doc), encoding="utf-8")
    return path


def read_export(path: str | Path) -> dict[str, Any]:
    """Read and validate an export file (YAML or JSON).

    Raises:
        ExportError: naming the file and what is wrong with it, whatever the file holds.
    """
    path = Path(path)
    if not path.is_file():
        why = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise ExportError(f"EDF file {str(path)!r} {why}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ExportError(f"{path} is not text, so not a dm-search EDF export (YAML or JSON); "
                          "make one with `dm-search export STUDY`") from None
    except OSError as err:
        raise ExportError(f"{path} cannot be read: {err.strerror}") from None
    try:
        # JSON is read as JSON: YAML 1.1 would take its 5e-07 for a string.
        doc = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ExportError(f"{path} is neither YAML nor JSON: {err}") from None
    if doc is None:  # nothing but blanks and comments
        raise ExportError(f"{path} is empty; make an EDF export with `dm-search export STUDY`")
    if not isinstance(doc, dict) or SCHEMA_KEY not in doc:
        found = "no" if isinstance(doc, dict) else f"a {type(doc).__name__}, not a mapping with a"
        raise ExportError(f"{path} is not a dm-search EDF export ({found} '{SCHEMA_KEY}' key); "
                          "make one with `dm-search export STUDY`")
    if doc[SCHEMA_KEY] not in READS:
        raise ExportError(f"{path} has schema version {doc[SCHEMA_KEY]!r}; this dm-search "
                          f"({__version__}) reads versions {', '.join(map(str, READS))}. "
                          "Re-export it, or upgrade dm-search.")
    loss = doc.get("loss")
    if not isinstance(loss, dict) or loss.get("normalise") not in NORMALISATIONS:
        raise ExportError(f"{path}: loss.normalise must be one of {', '.join(NORMALISATIONS)}")
    try:
        float(loss.get("eps", 5e-7))
    except (TypeError, ValueError):
        raise ExportError(f"{path}: loss.eps must be a number >= 0; got "
                          f"{loss.get('eps')!r}") from None
    try:
        _build_loss(doc)  # the EDF and eps are checked where they are used
        if doc.get("recipe") is not None:
            Recipe.from_dict(doc["recipe"])
    except (TypeError, ValueError) as err:
        raise ExportError(f"{path}: {err}") from None
    return doc


def _no_recipe(path: Path) -> str:
    return (f"{path} was exported without its training recipe (an older dm-search): the EDF "
            "was validated with a particular learning rate and schedule, and may collapse with "
            "another. Re-export it with `dm-search export STUDY` to get the recipe.")


def _build_loss(doc: dict[str, Any], **overrides: Any) -> DMLoss:
    # YAML 1.1 reads a hand-written 5e-7 as a string; float() takes it as meant.
    kwargs: dict[str, Any] = {"normalise": doc["loss"]["normalise"],
                              "eps": float(doc["loss"].get("eps", 5e-7))}
    kwargs.update(overrides)
    edf: EDF | EDFSchedule = EDF.from_config(doc.get("edf"))  # type: ignore[arg-type]
    schedule = doc.get("schedule")
    if schedule is not None:
        if not isinstance(schedule, dict):
            raise ValueError("schedule must be a mapping with edf_end and ramp")
        edf = EDFSchedule.from_config({"edf": doc["edf"], "edf_end": schedule.get("edf_end"),
                                       "ramp": schedule.get("ramp") or {}})
    return DMLoss(edf, **kwargs)


def load_loss(path: str | Path, **overrides: Any) -> DMLoss:
    """A :class:`DMLoss` with the EDF, normalisation and saturation of an export file.

    Keyword ``overrides`` (``normalise``, ``eps``, ``ignore_index``) replace the file's;
    ``guard=True`` makes the loss raise TrainingCollapsed when training collapses.

    An export with a ``schedule:`` gives a loss whose EDF moves over training: call
    ``loss_fn.set_step(step, total_steps)`` (or ``set_progress(fraction)``) before each step;
    ``loss_fn.edf`` is the EDF in force.

    Raises:
        ExportError: the file is missing or is not a valid dm-search EDF export.

    Example:
        >>> loss_fn = load_loss("best_edf.yaml")  # doctest: +SKIP
        >>> loss_fn(logits, target).backward()  # doctest: +SKIP
    """
    doc = read_export(path)
    if doc.get("recipe") is None:
        warnings.warn(_no_recipe(Path(path)), stacklevel=2)
    return _build_loss(doc, **overrides)


def load_recipe(path: str | Path) -> Recipe:
    """The training recipe the exported EDF was validated with: ``.optimizer(params)``,
    ``.scheduler(optimizer, total_steps)``, ``.epochs``, ``.batch_size``, ``.lr``.

    Raises:
        ExportError: the file is not a valid export, or predates recipes.

    Example:
        >>> recipe = load_recipe("best_edf.yaml")  # doctest: +SKIP
        >>> opt = recipe.optimizer(model.parameters())  # doctest: +SKIP
        >>> sched = recipe.scheduler(opt, recipe.epochs * len(loader))  # doctest: +SKIP
    """
    doc = read_export(path)
    if doc.get("recipe") is None:
        raise ExportError(_no_recipe(Path(path)))
    return Recipe.from_dict(doc["recipe"])
