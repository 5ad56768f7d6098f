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
import re
from typing import Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from dm_search import edf as edf_mod
from dm_search.edf import EDF
from dm_search.study.families import FamilyCoords, FamilySpace, resolve
from dm_search.training.config import (
    ConfigError,
    FrozenModel,
    TrialConfig,
    apply_overrides,
)

__all__ = ["FamilySpace", "FinalSpec", "ParamRange", "RaceSpec", "SamplerSpec", "SchedulerSpec",
           "SpaceSpec", "StudySpec", "TrackingSpec"]

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
    families: dict[str, FamilySpace] = Field(default_factory=lambda: {"dm": FamilySpace()})
    params: dict[str, ParamRange] = Field(default_factory=dict)
    # How the searched trials are shared between families: "coords" gives each a share that
    # follows its number of searched coordinates (the sampler picks the points inside it);
    # "sampler" leaves the family to the sampler, which can settle on a one-parameter family
    # early and starve a two-parameter one.
    family_budget: Literal["coords", "sampler"] | None = None
    # sampler grid: the exact points to evaluate, as EDF configs (+ optional dotted params).
    grid: list[dict[str, Any]] = Field(default_factory=list)


class SamplerSpec(FrozenModel):
    name: Literal["tpe", "cmaes", "qmc", "random", "grid"] = "tpe"
    seed: int = 0
    options: dict[str, Any] = Field(default_factory=dict)  # passed to the Optuna sampler
    # tpe: the most recent finished trials its bad group is estimated from, once a study
    # holds more (its good group is always the whole study's); None: 1,000. At least 250: the
    # good group's size (a tenth of the trials TPE sees, at most 25) then stays the whole
    # study's. See sampling.py.
    history: int | None = Field(None, ge=250)

    @model_validator(mode="after")
    def _history_is_tpes(self) -> SamplerSpec:
        if self.history is not None and self.name != "tpe":
            raise ValueError(f"history bounds what TPE reads; the {self.name} sampler takes "
                             "no history: leave it out")
        return self


class SchedulerSpec(FrozenModel):
    """Early stopping. ``rung`` (default) is successive halving with a late first rung, a rung
    decided only once ``min_trials`` trials reached it, and a trend term in the score; ``asha``
    is plain asynchronous successive halving (first arrival continues, score = current value);
    ``median`` stops a trial whose best value is below the median of the others' running means.
    The first rung (or the median rule's start) is ``grace_period`` epochs, or
    ``grace_fraction`` of the budget."""

    name: Literal["rung", "asha", "median", "none"] = "rung"
    grace_period: int | None = Field(None, ge=1)  # epochs every trial runs before any stop
    grace_fraction: float | None = Field(None, gt=0.0, le=1.0)  # the same, as a budget share
    reduction_factor: float = Field(4.0, gt=1.0)  # keep the top 1/reduction_factor at a rung
    min_trials: int = Field(5, ge=1)  # rung: trials that must reach a rung before it decides
    trend: float = Field(1.0, ge=0.0)  # rung: score = val + trend * (gain over trend_window)
    trend_window: int = Field(5, ge=1)

    @model_validator(mode="after")
    def _one_grace(self) -> SchedulerSpec:
        if self.grace_period is not None and self.grace_fraction is not None:
            raise ValueError("give grace_period (epochs) or grace_fraction (of the budget), "
                             "not both")
        # Options a scheduler would silently ignore are mistakes: say which ones it takes.
        takes = {"rung": set(type(self).model_fields) - {"name"},
                 "asha": {"grace_period", "grace_fraction", "reduction_factor"},
                 "median": {"grace_period", "grace_fraction"},
                 "none": set()}[self.name]
        fields = type(self).model_fields
        # Compared with the defaults, not with what was written: a spec dumped whole (a
        # detached study's) repeats every default.
        unused = sorted(f for f in set(fields) - takes - {"name"}
                        if getattr(self, f) != fields[f].default)
        if unused:
            raise ValueError(f"scheduler {self.name!r} does not use {', '.join(unused)}; it "
                             f"takes {', '.join(sorted(takes)) or 'no options'}")
        return self

    def grace_epochs(self, budget: int) -> int:
        """The first rung in epochs for trials of ``budget`` epochs (default: a third)."""
        if self.grace_period is not None:
            return self.grace_period
        return max(1, round((self.grace_fraction or 1.0 / 3.0) * budget))


class ResourcesSpec(FrozenModel):
    cpu: float = Field(1.0, gt=0.0)
    gpu: float = Field(0.0, ge=0.0)  # fractions share a GPU between trials
    # On a cluster (which may add nodes), how long to wait for a node that can hold a trial.
    wait_s: float = Field(600.0, ge=0.0)


class FinalSpec(FrozenModel):
    """Retrain the best config and the plain-CE baseline on the full training set; with
    ``lr_factors``, also at those multiples of each one's learning rate (how far the EDF's
    advantage holds when the lr moves)."""

    enabled: bool = False
    seeds: int = Field(3, ge=1)
    lr_factors: tuple[float, ...] = ()
    lr_seeds: int = Field(1, ge=1)  # seeds per factor: each factor is two more runs per seed

    @field_validator("lr_factors")
    @classmethod
    def _factors(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(not (f > 0 and math.isfinite(f)) or f == 1 for f in v):
            raise ValueError("lr_factors are multiples of the learning rate: each > 0 and not 1 "
                             "(1 is the main retrain), e.g. [0.5, 2]")
        return tuple(sorted(set(v)))


class RaceSpec(FrozenModel):
    """Racing before crowning: after the search, the top ``candidates`` distinct full-budget
    configurations are trained again on the search split with up to ``seeds`` new training
    seeds each, one round per seed; a candidate that cannot catch the leader drops out after a
    round. The winner has the best ``rule`` over its runs: ``mean``, or ``lcb`` (the mean
    less one standard error). A run's score is the mean of its last ``window`` epochs' clean
    validation accuracy; the search ranks its candidates by it too. With ``budget_epochs``,
    ``reserve`` of it is held back from the search for the races (never more than their
    runs need, and never so much that the search cannot run its baselines and one trial);
    the races then run while the budget holds them, and a study trains no more than its
    budget. Without a budget the races' runs come on top of n_trials."""

    # Defaults measured by benchmarks/bench_racing.py: of the rules replayed, the top 3 on one
    # new seed each, crowned by the mean, had the lowest regret and the lightest tail at the
    # budget a default study runs (about 26 full-length trials); a lower bound never beat the
    # mean, and more seeds cost the search more than they gave.
    enabled: bool = True
    candidates: int = Field(3, ge=2)
    seeds: int = Field(1, ge=1)
    rule: Literal["mean", "lcb"] = "mean"
    window: int = Field(5, ge=1)
    reserve: float = Field(0.2, ge=0.0, lt=1.0)

    def reserve_runs(self) -> int:
        """Full-length runs the races may need at most."""
        return self.candidates * self.seeds if self.enabled else 0


class MLflowSpec(FrozenModel):
    """Where MLflow keeps the study's runs."""

    # A tracking server (http://HOST:5000) or a database (sqlite:///mlflow.db); default:
    # $MLFLOW_TRACKING_URI, else mlflow.db in the study's folder.
    tracking_uri: str | None = None
    experiment: str | None = None  # default: the study's name

    @field_validator("tracking_uri")
    @classmethod
    def _no_password(cls, v: str | None) -> str | None:
        if v is not None and re.match(r"^[a-z+]+://[^/@]*:[^/@]*@", v):
            # The spec is recorded on the study: a password in it would reach the database.
            raise ValueError("tracking_uri holds a password, which the study would record: "
                             "give it in MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD "
                             "instead, and the URI without it")
        return v


class TrackingSpec(FrozenModel):
    """Optional trackers that show the study's runs (off by default; each needs its extra:
    ``pip install "dm-search[mlflow]"``, ``"dm-search[tensorboard]"``)."""

    mlflow: MLflowSpec | None = None
    tensorboard: bool = False  # event files under <study_dir>/tensorboard/<name>/


# What may change between submissions of one study: its budget, where and how it runs (its
# code's folder too), the races and the final stage (which train after the search and change
# none of its results), and the trackers that show it.
IDENTITY_EXCLUDES = {"name", "storage", "study_dir", "n_trials", "budget_epochs",
                     "max_concurrent", "resources", "max_failures", "final", "race",
                     "tracking", "code"}


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
    # Run the paper's settings that fall inside the space first (measured: it keeps a study at
    # the hand grid's level where TPE alone misses the grid's best region).
    warm_start: bool = True
    race: RaceSpec = RaceSpec()
    final: FinalSpec = FinalSpec()
    tracking: TrackingSpec = TrackingSpec()
    # The folder of your own code (trainer, model, loader), relative to the spec's folder:
    # it is importable by the driver and shipped to every Ray worker (Ray's runtime
    # environment, working_dir), so a cluster's nodes need not have it.
    code: str | None = None
    # Reference EDFs ("cce", "gce:q=0.7"): each runs once per study at full budget, never
    # early-stopped, and is shown beside the search's results.
    baselines: list[str] = Field(default_factory=lambda: ["cce"])
    # Total epochs the study may train (references included): a trial starts only while the
    # epochs trained, those running trials may still need and its own fit. None: n_trials.
    budget_epochs: int | None = Field(None, ge=1)
    # Each searched family's coordinates and ranges, resolved once by validation.
    _coords: dict[str, FamilyCoords] = PrivateAttr(default_factory=dict)

    @field_validator("baselines")
    @classmethod
    def _valid_baselines(cls, v: list[str]) -> list[str]:
        seen = set()
        for i, text in enumerate(v):
            try:
                edf = edf_mod.from_spec_string(text)
            except ValueError as err:
                raise ValueError(f"baselines[{i}]: {err}") from None
            if edf in seen:
                raise ValueError(f"baselines[{i}]: {text!r} is listed twice")
            seen.add(edf)
        return v

    def baseline_edfs(self) -> list[EDF]:
        return [edf_mod.from_spec_string(t) for t in self.baselines]

    @field_validator("base")
    @classmethod
    def _valid_base(cls, v: dict[str, Any]) -> dict[str, Any]:
        cfg = TrialConfig.from_dict(v, source="base")
        if cfg.data is not None and cfg.data.val_fraction <= 0:
            raise ValueError("a search needs a clean validation split: base.data.val_fraction > 0")
        if cfg.loss.edf_end is not None:
            # Every trial's EDF, schedule included, comes from the space: this would be dropped.
            raise ValueError("base.loss.edf_end: a study takes each trial's EDF and its schedule "
                             "from space.families; search a schedule there (e.g. dm: {mode_end: "
                             "[0.0, 0.75]}) and leave edf_end and ramp out of the base")
        return cfg.to_dict()

    @model_validator(mode="after")
    def _valid_space(self) -> StudySpec:
        known = edf_mod.names()
        coords: dict[str, FamilyCoords] = {}
        if not self.space.families and not self.space.grid:
            raise ValueError("space.families is empty: list at least one EDF family")
        for family, fs in self.space.families.items():
            if family not in known:
                raise ValueError(f"space.families.{family}: unknown EDF family; known: "
                                 f"{', '.join(known)}")
            coords[family] = resolve(family, fs)
        self._coords = coords
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
        if self.budget_epochs is not None and epochs:
            need = (len(self.baselines) + 1) * epochs
            if self.budget_epochs < need:
                raise ValueError(
                    f"budget_epochs ({self.budget_epochs}) cannot hold the "
                    f"{len(self.baselines)} baseline(s) and one searched trial of {epochs} "
                    f"epochs each: raise it to at least {need}, or leave it out")
        grace = self.scheduler.grace_period
        if self.scheduler.name != "none" and epochs and grace is not None and grace > epochs:
            raise ValueError(f"scheduler.grace_period ({grace}) exceeds the trials' {epochs} "
                             "epochs")
        return self

    def coords(self, family: str) -> FamilyCoords:
        """Where the study searches ``family``, resolved when the spec was validated."""
        return self._coords[family]

    def base_config(self) -> TrialConfig:
        return TrialConfig.from_dict(self.base, source="base")

    def search_budget(self) -> int | None:
        """The epochs the search may train: budget_epochs less the races' reserve (None
        without a budget, or while the trials' length is not known)."""
        if self.budget_epochs is None:
            return None
        epochs = self.total_epochs()
        held = round(self.race.reserve * self.budget_epochs) if self.race.enabled else 0
        if epochs:
            held = min(held, self.race.reserve_runs() * epochs)
            floor = (len(self.baselines) + 1) * epochs
            return max(self.budget_epochs - held, min(floor, self.budget_epochs))
        return self.budget_epochs - held

    def total_epochs(self) -> int | None:
        """Epochs each trial runs; None when the budget is in iterations (the epoch count then
        depends on the training-set size, known only when a trial loads its data)."""
        return self.base_config().optim.epoch_budget

    def identity(self) -> dict[str, Any]:
        """What defines the study's results: a resumed study must match it. The budget (trials
        or epochs), concurrency, resources, where things are stored and the final stage may
        change between submissions."""
        return self.model_dump(mode="json", exclude=IDENTITY_EXCLUDES)

    def stored(self) -> dict[str, Any]:
        """The spec as recorded on the study: no storage URL (it may hold a password)."""
        return self.model_dump(mode="json", exclude={"storage"})
