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
from dm_search.edf import EDF
from dm_search.training.config import (
    ConfigError,
    FrozenModel,
    TrialConfig,
    apply_overrides,
    format_validation_error,
    read_yaml,
)

__all__ = [
    "DEFAULT_FAMILY_RANGES",
    "FamilySpace",
    "FinalSpec",
    "ParamRange",
    "SamplerSpec",
    "SchedulerSpec",
    "StudySpec",
    "end_ranges",
    "is_scheduled",
    "load_spec",
    "ramp_space",
]


# Ranges used when a family is listed without its own, wide enough to hold the paper's settings
# (modes 0 to 2/3). dm's spread starts at 4: on MNIST-1D no spread below 4 ever won, and
# spreads of 32 and more collapse training at modes up to 1/2 (benchmarks/RESULTS.md).
DEFAULT_FAMILY_RANGES: dict[str, dict[str, Any]] = {
    "dm": {"mode": (0.0, 0.75), "spread": (4.0, 24.0)},
    "normal": {"mode": (0.0, 1.0), "spread": (0.5, 24.0)},
    "beta": {"mode": (0.0, 1.0), "spread": (0.5, 24.0)},
    "exponential": {"mode": 0.0, "spread": (0.1, 8.0)},
    "gce": {"mode": (0.1, 0.5)},
}
# The same families' default ranges in (mean, std) of the emphasis density; one-parameter
# families (exponential, gce) take a mean only.
DEFAULT_MOMENT_RANGES: dict[str, dict[str, Any]] = {
    "dm": {"mean": (0.2, 0.7), "std": (0.12, 0.29)},
    "normal": {"mean": (0.1, 0.9), "std": (0.12, 0.28)},
    "beta": {"mean": (0.1, 0.9), "std": (0.12, 0.28)},
    "exponential": {"mean": (0.05, 0.5)},
    "gce": {"mean": (0.34, 0.5)},
}
# Which coordinates a family listed without ranges is searched in.
DEFAULT_COORDS: Literal["mode_spread", "moments"] = "mode_spread"
# The loss-equivalent families run as the losses they stand for (no DN, exact direction), so
# a study answers "is DM better than plain CE/GCE?"; the others run with DN as in the paper.
BASELINE_FAMILIES = ("cce", "mae", "mse", "gce")


Range = tuple[float, float] | float
Shape = Literal["linear", "cosine", "step"]


class FamilySpace(FrozenModel):
    """Where to search one family: either its emphasis mode and spread, or the mean and std of
    its emphasis density, each a [low, high] range or a single fixed value.

    An emphasis schedule is searched by giving where the EDF ends: ``mode_end`` / ``spread_end``
    (or ``mean_end`` / ``std_end``), each a range or a value; a coordinate without an end stays
    where it started. ``ramp`` lists the shapes to choose from (default linear), and
    ``ramp_start`` / ``ramp_end`` when the move starts and ends, as fractions of the budget
    (default 0 and 1)."""

    mode: Range | None = None
    spread: Range | None = None
    log_spread: bool = False
    mean: Range | None = None
    std: Range | None = None
    mode_end: Range | None = None
    spread_end: Range | None = None
    mean_end: Range | None = None
    std_end: Range | None = None
    ramp: list[Shape] | Shape | None = None
    ramp_start: Range | None = None
    ramp_end: Range | None = None
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


# What may change between submissions of one study: its budget, where and how it runs, the
# races and the final stage (which train after the search and change none of its results).
IDENTITY_EXCLUDES = {"name", "storage", "study_dir", "n_trials", "budget_epochs",
                     "max_concurrent", "resources", "max_failures", "final", "race"}


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
    # Reference EDFs ("cce", "gce:q=0.7"): each runs once per study at full budget, never
    # early-stopped, and is shown beside the search's results.
    baselines: list[str] = Field(default_factory=lambda: ["cce"])
    # Total epochs the study may train (references included): a trial starts only while the
    # epochs trained, those running trials may still need and its own fit. None: n_trials.
    budget_epochs: int | None = Field(None, ge=1)

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
        if cfg.data.val_fraction <= 0:
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


def _shown(r: tuple[float, float]) -> str:
    """A range as the spec wrote it: a number where it is one."""
    return f"{r[0]:g}" if r[0] == r[1] else f"[{r[0]:g}, {r[1]:g}]"


def _range(v: tuple[float, float] | float) -> tuple[float, float]:
    return (v, v) if isinstance(v, int | float) else (float(v[0]), float(v[1]))


def _check_family(family: str, fs: FamilySpace) -> None:
    from dm_search.edf import moments

    where = f"space.families.{family}"
    kind = moments.has_moments(family)
    if kind == "none":
        raise ValueError(f"{where}: {family!r} has no parameters to search; list it under "
                         f"baselines (e.g. baselines: [{family}]) and it runs once per study, at "
                         "full budget, as a reference")
    if family_coords(family, fs) == "moments":
        _check_moment_family(family, fs, kind)
        return
    default = DEFAULT_FAMILY_RANGES[family]
    if (fs.spread is not None or fs.spread_end is not None) and "spread" not in default:
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
    _check_schedule(family, fs, (mode_r, spread_r))


SCHEDULE_KEYS = ("mode_end", "spread_end", "mean_end", "std_end")
RAMP_KEYS = ("ramp", "ramp_start", "ramp_end")


def is_scheduled(fs: FamilySpace) -> bool:
    """Whether the family is searched as an emphasis schedule (an end coordinate is given)."""
    return any(getattr(fs, k) is not None for k in SCHEDULE_KEYS)


def end_ranges(family: str, fs: FamilySpace,
               start: tuple[tuple[float, float] | None, tuple[float, float] | None],
               ) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
    """Where a scheduled family's two coordinates end; a coordinate without an end range ends
    where it started (None: it follows the start's suggestion)."""
    names = ("mean_end", "std_end") if family_coords(family, fs) == "moments" else (
        "mode_end", "spread_end")
    out = [None if getattr(fs, n) is None else _range(getattr(fs, n)) for n in names]
    return out[0], out[1] if start[1] is not None else None


def ramp_space(fs: FamilySpace) -> tuple[list[str], tuple[float, float], tuple[float, float]]:
    """(shapes to choose from, ramp start range, ramp end range) with the defaults filled in."""
    shapes: list[str] = [fs.ramp] if isinstance(fs.ramp, str) else list(fs.ramp or ["linear"])
    start = _range(fs.ramp_start if fs.ramp_start is not None else 0.0)
    end = _range(fs.ramp_end if fs.ramp_end is not None else 1.0)
    return shapes, start, end


def _check_schedule(family: str, fs: FamilySpace,
                    start: tuple[tuple[float, float] | None, tuple[float, float] | None]) -> None:
    from dm_search.edf import EDFSchedule

    where = f"space.families.{family}"
    coords = family_coords(family, fs)
    if not is_scheduled(fs):
        given = [k for k in RAMP_KEYS if getattr(fs, k) is not None]
        if given:
            end = "mean_end" if coords == "moments" else "mode_end"
            says = "says" if len(given) == 1 else "say"
            raise ValueError(f"{where}: {', '.join(given)} {says} how the EDF moves, but no "
                             f"end is given: add {end} (or another *_end range), or remove "
                             f"{', '.join(given)}")
        return
    other = ("mode_end", "spread_end") if coords == "moments" else ("mean_end", "std_end")
    wrong = [k for k in other if getattr(fs, k) is not None]
    if wrong:
        pair = "mean/std" if coords == "moments" else "mode/spread"
        raise ValueError(f"{where}: {', '.join(wrong)} is in the other coordinates; a family "
                         f"searched in {pair} ends in {pair} too ({', '.join(SCHEDULE_KEYS)})")
    shapes, r_start, r_end = ramp_space(fs)
    if not shapes:
        raise ValueError(f"{where}.ramp: list at least one shape (linear, cosine, step)")
    for name, r in (("ramp_start", r_start), ("ramp_end", r_end)):
        if not 0.0 <= r[0] <= r[1] <= 1.0:
            raise ValueError(f"{where}.{name}: a fraction of the budget, need 0 <= low <= high "
                             f"<= 1; got {list(r)}")
    if r_start[1] > r_end[0]:
        raise ValueError(f"{where}: ramp_start {_shown(r_start)} reaches past ramp_end "
                         f"{_shown(r_end)}: no ramp may start after it ends, so the highest "
                         "ramp_start must not exceed the lowest ramp_end")
    ends = end_ranges(family, fs, start)
    names = ("mean_end", "std_end") if coords == "moments" else ("mode_end", "spread_end")
    for name, end_r in zip(names, ends, strict=True):
        if end_r is not None and not end_r[0] <= end_r[1]:
            raise ValueError(f"{where}.{name}: need low <= high; got {list(end_r)}")
    if coords == "moments":
        return  # out-of-reach ends go to the nearest member, as starts do
    modes, spreads = ends[0] or start[0], ends[1] or start[1]
    assert modes is not None and start[0] is not None
    first = EDF.from_mode_spread(family, mode=start[0][0],
                                 spread=None if start[1] is None else start[1][0])
    for m in modes:  # the end range's corners must all be valid ends of a schedule
        for sp in (spreads if spreads is not None else (None,)):
            try:
                EDFSchedule(first, EDF.from_mode_spread(family, mode=m, spread=sp))
            except ValueError as err:
                raise ValueError(f"{where}: the end range reaches an invalid schedule ({err})"
                                 ) from None


def _check_moment_family(family: str, fs: FamilySpace, kind: str) -> None:
    from dm_search.edf import moments

    where = f"space.families.{family}"
    if fs.mode is not None or fs.spread is not None:
        raise ValueError(f"{where}: give either mode/spread or mean/std, not both")
    mean_r, std_r = moment_ranges(family, fs)
    if kind == "one" and fs.std_end is not None:
        raise ValueError(f"{where}: {family!r} has one free parameter, so its std follows from "
                         "its mean; give only mean_end")
    if kind == "one" and std_r is not None:
        raise ValueError(f"{where}: {family!r} has one free parameter, so its std follows from "
                         "its mean; give only mean")
    if kind == "two" and std_r is None:
        raise ValueError(f"{where}: give both mean and std (or mode and spread)")
    for name, r in (("mean", mean_r), ("std", std_r)):
        if r is not None and not (0.0 <= r[0] <= r[1] <= 1.0):
            raise ValueError(f"{where}.{name}: need 0 <= low <= high <= 1; got {r!r}")
    region = moments.reach(family)
    lo, hi = region.mean_range
    if mean_r[1] < lo or mean_r[0] > hi:
        raise ValueError(f"{where}.mean: {family!r} reaches no mean in {list(mean_r)}; "
                         f"{region.describe()}")
    if std_r is not None:
        # Most of the rectangle must be reachable: the search clamps the rest to the boundary.
        pts = [(m, sd) for m in _grid(mean_r) for sd in _grid(std_r)]
        ok = 0
        for m, sd in pts:
            at = region.at(m)
            ok += at is not None and at[0] <= sd <= at[1]
        if ok < 0.5 * len(pts):
            raise ValueError(f"{where}: most of mean {list(mean_r)} x std {list(std_r)} is out "
                             f"of reach ({ok} of {len(pts)} grid points); {region.describe()}")
    _check_schedule(family, fs, (mean_r, std_r))


def _grid(r: tuple[float, float], n: int = 7) -> list[float]:
    return [r[0] + (r[1] - r[0]) * i / (n - 1) for i in range(n)]


def family_coords(family: str, fs: FamilySpace) -> Literal["mode_spread", "moments"]:
    """The coordinates ``family`` is searched in: what the spec gives for its start, else for
    its end, else the default."""
    for moments, mode_spread in (((fs.mean, fs.std), (fs.mode, fs.spread)),
                                 ((fs.mean_end, fs.std_end), (fs.mode_end, fs.spread_end))):
        if any(v is not None for v in moments):
            return "moments"
        if any(v is not None for v in mode_spread):
            return "mode_spread"
    return DEFAULT_COORDS


def family_ranges(family: str, fs: FamilySpace) -> tuple[tuple[float, float] | None,
                                                          tuple[float, float] | None]:
    """(mode range, spread range) with the defaults filled in; None where not applicable."""
    default = DEFAULT_FAMILY_RANGES.get(family)
    if default is None:
        return None, None
    mode = _range(fs.mode if fs.mode is not None else default["mode"])
    spread_v = fs.spread if fs.spread is not None else default.get("spread")
    return mode, (None if spread_v is None else _range(spread_v))


def moment_ranges(family: str, fs: FamilySpace) -> tuple[tuple[float, float],
                                                         tuple[float, float] | None]:
    """(mean range, std range) with the defaults filled in; std None for one-parameter
    families."""
    default = DEFAULT_MOMENT_RANGES[family]
    given = fs.mean is not None or fs.std is not None
    mean = _range(fs.mean if fs.mean is not None else default["mean"])
    std_v = fs.std if given else default.get("std")
    return mean, (None if std_v is None else _range(std_v))


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
    data = read_yaml(path, sections="name, base, space", example="search_spaces/quickstart.yaml")
    base = data.get("base")
    if isinstance(base, str):
        base_path = Path(base)
        if not base_path.is_absolute() and not base_path.is_file():
            base_path = path.parent / base
        if not base_path.exists():  # a folder is read_yaml's to explain
            raise ConfigError(f"{path}: base: the trial config {base!r} does not exist (looked "
                              f"in {base_path}); give a path relative to the spec, or the config "
                              "inline")
        try:
            data["base"] = read_yaml(base_path)
        except ConfigError as err:
            raise ConfigError(f"{path}: base: {err}") from None
    if "base_set" in data:
        overrides = data.pop("base_set")
        if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
            raise ConfigError(f"{path}: base_set must be a list of a.b=value strings, e.g. "
                              f"base_set: [optim.epochs=30]; got {overrides!r}")
        if isinstance(data.get("base"), dict):
            try:
                data["base"] = apply_overrides(data["base"], overrides)
            except ConfigError as err:
                raise ConfigError(f"{path}: base_set: {err}") from None
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

