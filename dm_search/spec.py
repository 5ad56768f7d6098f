"""Study specs: what to search, how, and with what budget. Validated once (unknown keys are
errors); the search space is checked against the EDF families before anything runs.

A minimal spec (see ``search_spaces/template.yaml`` for every field)::

    name: quickstart
    base: examples/mnist1d_dm.yaml        # a trial config file, or the config inline
    space:
      families:
        dm: {mode: [0.0, 0.75], spread: [1.0, 24.0]}
        cce: {}
    n_trials: 12
    max_concurrent: 2
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from dm_search import edf as edf_mod
from dm_search.config import (
    ConfigError,
    FrozenModel,
    TrialConfig,
    apply_overrides,
    format_validation_error,
    read_yaml,
)
from dm_search.edf import EDF

__all__ = [
    "DEFAULT_FAMILY_RANGES",
    "FamilySpace",
    "FinalSpec",
    "ParamRange",
    "SamplerSpec",
    "SchedulerSpec",
    "StudySpec",
    "load_spec",
]


# Ranges used when a family is listed without its own: wide enough to hold the paper's settings
# (PAPER.md section 6: modes 0 to 2/3, spreads 0.5 to 24).
DEFAULT_FAMILY_RANGES: dict[str, dict[str, Any]] = {
    "dm": {"mode": (0.0, 0.75), "spread": (0.5, 24.0)},
    "normal": {"mode": (0.0, 1.0), "spread": (0.5, 24.0)},
    "beta": {"mode": (0.0, 1.0), "spread": (0.5, 24.0)},
    "exponential": {"mode": 0.0, "spread": (0.1, 8.0)},
    "gce": {"mode": (0.1, 0.5)},
}
# The loss-equivalent families run as the losses they stand for (no DN, exact direction), so
# a study answers "is DM better than plain CE/GCE?"; the others run with DN as in the paper.
BASELINE_FAMILIES = ("cce", "mae", "mse", "gce")


class FamilySpace(FrozenModel):
    """Where to search one family: its emphasis mode and spread, each a [low, high] range or a
    single fixed value. Families without those coordinates (cce, mae, mse, uniform) take none."""

    mode: tuple[float, float] | float | None = None
    spread: tuple[float, float] | float | None = None
    log_spread: bool = False
    normalise: Literal["batch", "none"] | None = None  # default: none for baselines, else batch
    eps: float | None = Field(None, ge=0.0)  # default: 0 for baselines, else 5e-7


class ParamRange(FrozenModel):
    """Another trial hyperparameter, addressed by its dotted path (e.g. optim.lr)."""

    low: int | float | None = None  # int first: integer bounds search integers
    high: int | float | None = None
    log: bool = False
    step: int | float | None = None
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _shape(self) -> ParamRange:
        if self.choices is not None:
            if self.low is not None or self.high is not None or not self.choices:
                raise ValueError("give either choices (a non-empty list) or low/high, not both")
        elif self.low is None or self.high is None or not self.low <= self.high:
            raise ValueError("a range needs low <= high (or use choices: [...])")
        elif self.log and self.low <= 0:
            raise ValueError("a log-scale range needs low > 0")
        return self

    @property
    def is_int(self) -> bool:
        return (isinstance(self.low, int) and isinstance(self.high, int) and not
                isinstance(self.low, bool))


class SpaceSpec(FrozenModel):
    families: dict[str, FamilySpace] = Field(default_factory=lambda: {"dm": FamilySpace(),
                                                                      "cce": FamilySpace()})
    params: dict[str, ParamRange] = Field(default_factory=dict)
    # sampler grid: the exact points to evaluate, as EDF configs (+ optional dotted params).
    grid: list[dict[str, Any]] = Field(default_factory=list)


class SamplerSpec(FrozenModel):
    name: Literal["tpe", "cmaes", "qmc", "random", "grid"] = "tpe"
    seed: int = 0
    options: dict[str, Any] = Field(default_factory=dict)  # passed to the Optuna sampler


class SchedulerSpec(FrozenModel):
    name: Literal["asha", "median", "none"] = "asha"
    grace_period: int = Field(5, ge=1)  # epochs every trial runs before it can be stopped
    reduction_factor: float = Field(3.0, gt=1.0)  # asha: keep the top 1/reduction_factor


class ResourcesSpec(FrozenModel):
    cpu: float = Field(1.0, gt=0.0)
    gpu: float = Field(0.0, ge=0.0)  # fractions share a GPU between trials


class FinalSpec(FrozenModel):
    """Retrain the best config and the plain-CE baseline on the full training set."""

    enabled: bool = False
    seeds: int = Field(3, ge=1)


class StudySpec(FrozenModel):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    storage: str | None = None  # default: $DM_SEARCH_STORAGE, else sqlite in study_dir
    study_dir: str = "runs"
    base: dict[str, Any] = Field(default_factory=dict)  # the trial config every trial starts from
    space: SpaceSpec = SpaceSpec()
    sampler: SamplerSpec = SamplerSpec()
    scheduler: SchedulerSpec = SchedulerSpec()
    n_trials: int = Field(20, ge=1)
    max_concurrent: int = Field(2, ge=1)
    resources: ResourcesSpec = ResourcesSpec()
    max_failures: int = Field(0, ge=0)  # retries of a failed trial (e.g. a lost node)
    warm_start: bool = False  # evaluate the paper's settings first
    final: FinalSpec = FinalSpec()

    @field_validator("base")
    @classmethod
    def _valid_base(cls, v: dict[str, Any]) -> dict[str, Any]:
        cfg = TrialConfig.from_dict(v, source="base")
        if cfg.data.val_fraction <= 0:
            raise ValueError("a search needs a clean validation split: base.data.val_fraction > 0")
        return cfg.to_dict()

    @model_validator(mode="after")
    def _valid_space(self) -> StudySpec:
        known = edf_mod.names()
        if not self.space.families and not self.space.grid:
            raise ValueError("space.families is empty: list at least one EDF family")
        for family, fs in self.space.families.items():
            if family not in known:
                raise ValueError(f"space.families.{family}: unknown EDF family; known: "
                                 f"{', '.join(known)}")
            _check_family(family, fs)
        base = self.base_config()
        for path, rng in self.space.params.items():
            try:
                value = rng.choices[0] if rng.choices else rng.low
                TrialConfig.from_dict(apply_overrides(base.to_dict(), [f"{path}={value}"]))
            except ConfigError as err:
                raise ValueError(
                    f"space.params.{path}: not a usable trial field ({err})"
                ) from None
        if self.sampler.name == "grid":
            if not self.space.grid:
                raise ValueError("sampler grid needs space.grid: the list of points to evaluate")
            if self.n_trials < len(self.space.grid):
                raise ValueError(f"n_trials ({self.n_trials}) is smaller than the grid "
                                 f"({len(self.space.grid)} points)")
        for i, point in enumerate(self.space.grid):
            unsearched = sorted(k for k in point if "." in k and k not in self.space.params)
            if unsearched:
                raise ValueError(f"space.grid[{i}] sets {', '.join(unsearched)}, which "
                                 "space.params does not list: add a range for it there")
            edf_part = {k: v for k, v in point.items() if "." not in k}
            try:
                EDF.from_config(edf_part)
            except ValueError as err:
                raise ValueError(f"space.grid[{i}]: {err}") from None
        epochs = self.total_epochs()
        if self.scheduler.name != "none" and epochs and self.scheduler.grace_period > epochs:
            raise ValueError(f"scheduler.grace_period ({self.scheduler.grace_period}) exceeds the "
                             f"trials' {epochs} epochs")
        return self

    def base_config(self) -> TrialConfig:
        return TrialConfig.from_dict(self.base, source="base")

    def total_epochs(self) -> int | None:
        """Epochs each trial runs; None when the budget is in iterations (the epoch count then
        depends on the training-set size, known only when a trial loads its data)."""
        o = self.base_config().optim
        return None if o.iterations is not None else (o.epochs or 30)

    def identity(self) -> dict[str, Any]:
        """What defines the study's results: a resumed study must match it. The trial budget,
        concurrency, resources and where things are stored may change between submissions."""
        return self.model_dump(mode="json", exclude={"name", "storage", "study_dir", "n_trials",
                                                     "max_concurrent", "resources",
                                                     "max_failures"})

    def stored(self) -> dict[str, Any]:
        """The spec as recorded on the study: no storage URL (it may hold a password)."""
        return self.model_dump(mode="json", exclude={"storage"})


def _range(v: tuple[float, float] | float) -> tuple[float, float]:
    return (v, v) if isinstance(v, int | float) else (float(v[0]), float(v[1]))


def _check_family(family: str, fs: FamilySpace) -> None:
    where = f"space.families.{family}"
    default = DEFAULT_FAMILY_RANGES.get(family)
    if default is None:
        if fs.mode is not None or fs.spread is not None:
            raise ValueError(f"{where}: {family!r} has no mode/spread to search; list it as "
                             f"'{family}: {{}}'")
        return
    if fs.spread is not None and "spread" not in default:
        raise ValueError(f"{where}: {family!r} has no spread; give only its mode")
    mode_r, spread_r = family_ranges(family, fs)
    assert mode_r is not None
    if not (math.isfinite(mode_r[0]) and math.isfinite(mode_r[1]) and mode_r[0] <= mode_r[1]):
        raise ValueError(f"{where}.mode: need low <= high; got {fs.mode!r}")
    if spread_r is not None:
        if not spread_r[0] <= spread_r[1]:
            raise ValueError(f"{where}.spread: need low <= high; got {fs.spread!r}")
        if fs.log_spread and spread_r[0] <= 0:
            raise ValueError(f"{where}.spread: log_spread needs low > 0")
    spreads: tuple[float | None, ...] = spread_r if spread_r is not None else (None,)
    for m in mode_r:  # the range's corners must all be valid EDFs
        for sp in spreads:
            try:
                EDF.from_mode_spread(family, mode=m, spread=sp)
            except ValueError as err:
                raise ValueError(f"{where}: the range reaches an invalid point ({err})") from None


def family_ranges(family: str, fs: FamilySpace) -> tuple[tuple[float, float] | None,
                                                          tuple[float, float] | None]:
    """(mode range, spread range) with the defaults filled in; None where not applicable."""
    default = DEFAULT_FAMILY_RANGES.get(family)
    if default is None:
        return None, None
    mode = _range(fs.mode if fs.mode is not None else default["mode"])
    spread_v = fs.spread if fs.spread is not None else default.get("spread")
    return mode, (None if spread_v is None else _range(spread_v))


def loss_settings(family: str, fs: FamilySpace | None) -> tuple[str, float]:
    """(normalise, eps) a trial of this family runs with."""
    baseline = family in BASELINE_FAMILIES
    normalise = (fs.normalise if fs and fs.normalise else ("none" if baseline else "batch"))
    eps = fs.eps if fs and fs.eps is not None else (0.0 if baseline else 5e-7)
    return normalise, eps


ENV_PREFIX = "env:"
ENV_STUDY_DIR = "DM_SEARCH_STUDY_DIR"


def load_spec(path: str | Path, *, name: str | None = None) -> StudySpec:
    """Read a study spec; ``base`` may be a path to a trial config (relative to the spec).

    ``env:NAME`` reads the spec's YAML from the environment variable NAME (how a detached
    study reaches the cluster without any file)."""
    if str(path).startswith(ENV_PREFIX):
        var = str(path)[len(ENV_PREFIX):]
        if var not in os.environ:
            raise ConfigError(f"spec {path}: environment variable {var} is not set")
        folder = Path(tempfile.mkdtemp(prefix="dm-search-spec-"))
        (folder / "spec.yaml").write_text(os.environ[var])
        path = folder / "spec.yaml"
    path = Path(path)
    data = read_yaml(path)
    base = data.get("base")
    if isinstance(base, str):
        base_path = Path(base)
        if not base_path.is_absolute() and not base_path.is_file():
            base_path = path.parent / base
        data["base"] = read_yaml(base_path)
    if isinstance(data.get("base"), dict) and "base_set" in data:
        data["base"] = apply_overrides(data["base"], data.pop("base_set"))
    if name is not None:
        data["name"] = name
    if os.environ.get(ENV_STUDY_DIR):
        # Deployments put every study's files on one shared volume, whatever the spec says.
        data["study_dir"] = os.environ[ENV_STUDY_DIR]
    try:
        return StudySpec.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, str(path))) from None
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None

