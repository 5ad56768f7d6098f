"""Where a study searches each EDF family: the spec's entry (:class:`FamilySpace`) resolved once,
at validation, into the coordinates and ranges (:class:`FamilyCoords`) that the spec checks
and the search space samples from.

A family is searched in (mode, spread) or in (mean, std) of its emphasis density, from the
ranges the spec gives or from the family's own defaults (``EDF.search_ranges`` /
``EDF.moment_ranges``, so that a registered family brings its own). A family given an end
(``mode_end`` ...) is searched as an emphasis schedule: where it ends and how it ramps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from dm_search.edf import EDF, EDFSchedule, get, moments
from dm_search.training.config import FrozenModel

__all__ = ["BASELINE_FAMILIES", "DEFAULT_COORDS", "FamilyCoords", "FamilySpace", "Range",
           "loss_settings", "resolve"]

Range = tuple[float, float] | float
Shape = Literal["linear", "cosine", "step"]
Pair = tuple[tuple[float, float] | None, tuple[float, float] | None]
Coords = Literal["mode_spread", "moments"]

# Which coordinates a family listed without ranges is searched in.
DEFAULT_COORDS: Coords = "mode_spread"
# The loss-equivalent families run as the losses they stand for (no DN, exact direction), so
# a study answers "is DM better than plain CE/GCE?"; the others run with DN as in the paper.
BASELINE_FAMILIES = ("cce", "mae", "mse", "gce")
SCHEDULE_KEYS = ("mode_end", "spread_end", "mean_end", "std_end")
RAMP_KEYS = ("ramp", "ramp_start", "ramp_end")


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


@dataclass(frozen=True)
class FamilyCoords:
    """One family's search, resolved: its two coordinates (the second None for a
    one-parameter family), their ranges, where a schedule ends and how it ramps."""

    family: str
    kind: Coords
    start: Pair  # (first, second) coordinate ranges; None where the family has no second
    end: Pair | None  # None: searched as a fixed EDF; a coordinate without an end range: None
    ramp: tuple[list[str], tuple[float, float], tuple[float, float]] | None
    log_spread: bool

    @property
    def names(self) -> tuple[str, str]:
        return ("mean", "std") if self.kind == "moments" else ("mode", "spread")

    @property
    def scheduled(self) -> bool:
        return self.end is not None

    def log(self, name: str) -> bool:
        """Whether coordinate ``name`` is sampled on a log scale."""
        return self.log_spread and name == "spread"

    def member(self, a: float, b: float | None) -> EDF:
        """The family's EDF at coordinates (a, b): the nearest reachable member in (mean, std),
        so that every sampled point trains some EDF."""
        if self.kind == "moments":
            return moments.nearest(self.family, a, b)
        return EDF.from_mode_spread(self.family, mode=a, spread=b)

    def _ranges(self) -> list[tuple[str, tuple[float, float] | None, tuple[float, float] | None]]:
        ends = self.end or (None, None)
        return [(n, r, e) for n, r, e in zip(self.names, self.start, ends, strict=True)]

    def inside(self, edf: EDF) -> bool:
        """Whether ``edf`` (as a fixed EDF, in a scheduled family) lies in the space."""
        for name, r, r_end in self._ranges():
            v = getattr(edf, name)
            for rr in (r, r_end):
                if rr is not None and (v is None or not rr[0] <= v <= rr[1]):
                    return False
        return True

    def as_params(self, edf: EDF) -> dict[str, float]:
        """The Optuna parameters, for the coordinates searched, that give ``edf`` (fixed: in
        a scheduled family its end is its start)."""
        point: dict[str, float] = {}
        for name, r, r_end in self._ranges():
            if r is not None and r[0] != r[1]:
                point[f"{self.family}.{name}"] = getattr(edf, name)
            if r_end is not None and r_end[0] != r_end[1]:
                point[f"{self.family}.{name}_end"] = getattr(edf, name)
        return point

    def dims(self) -> int:
        """How many coordinates the family searches (its start, its end, its ramp): >= 1."""
        n = sum(1 for r in self.start if r is not None and r[0] != r[1])
        if self.end is not None and self.ramp is not None:
            n += sum(1 for r in self.end if r is not None and r[0] != r[1])
            shapes, r_start, r_end = self.ramp
            n += (len(shapes) > 1) + (r_start[0] != r_start[1]) + (r_end[0] != r_end[1])
        return max(1, n)


def loss_settings(family: str, fs: FamilySpace | None) -> tuple[str, float]:
    """(normalise, eps) a trial of this family runs with."""
    baseline = family in BASELINE_FAMILIES
    normalise = (fs.normalise if fs and fs.normalise else ("none" if baseline else "batch"))
    eps = fs.eps if fs and fs.eps is not None else (0.0 if baseline else 5e-7)
    return normalise, eps


def resolve(family: str, fs: FamilySpace) -> FamilyCoords:
    """The family's search, checked: ValueError naming the spec key when a range is unusable
    (an unknown family, crossed bounds, points that are no EDF, a schedule that cannot run)."""
    where = f"space.families.{family}"
    kind = moments.has_moments(family)
    if kind == "none":
        raise ValueError(f"{where}: {family!r} has no parameters to search; list it under "
                         f"baselines (e.g. baselines: [{family}]) and it runs once per study, at "
                         "full budget, as a reference")
    coords = _coords_of(fs)
    start = (_moment_start(family, fs, kind) if coords == "moments"
             else _mode_spread_start(family, fs))
    end, ramp = _schedule(family, fs, coords, start)
    return FamilyCoords(family, coords, start, end, ramp, fs.log_spread)


def _coords_of(fs: FamilySpace) -> Coords:
    """What the spec gives for the start, else for the end, else the default."""
    for by_moments, by_mode in (((fs.mean, fs.std), (fs.mode, fs.spread)),
                                ((fs.mean_end, fs.std_end), (fs.mode_end, fs.spread_end))):
        if any(v is not None for v in by_moments):
            return "moments"
        if any(v is not None for v in by_mode):
            return "mode_spread"
    return DEFAULT_COORDS


def _range(v: Range) -> tuple[float, float]:
    return (v, v) if isinstance(v, int | float) else (float(v[0]), float(v[1]))


def _shown(r: tuple[float, float]) -> str:
    """A range as the spec wrote it: a number where it is one."""
    return f"{r[0]:g}" if r[0] == r[1] else f"[{r[0]:g}, {r[1]:g}]"


def _grid(r: tuple[float, float], n: int = 7) -> list[float]:
    return [r[0] + (r[1] - r[0]) * i / (n - 1) for i in range(n)]


def _mode_spread_start(family: str, fs: FamilySpace) -> Pair:
    where = f"space.families.{family}"
    default: dict[str, Any] = dict(get(family).search_ranges or {})
    if (fs.spread is not None or fs.spread_end is not None) and "spread" not in default:
        raise ValueError(f"{where}: {family!r} has no spread; give only its mode")
    if fs.mode is None and "mode" not in default:
        raise ValueError(f"{where}: {family!r} has no default mode range; give mode: [low, high]")
    mode_r = _range(fs.mode if fs.mode is not None else default["mode"])
    spread_v = fs.spread if fs.spread is not None else default.get("spread")
    spread_r = None if spread_v is None else _range(spread_v)
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
    return mode_r, spread_r


def _moment_start(family: str, fs: FamilySpace, kind: str) -> Pair:
    where = f"space.families.{family}"
    if fs.mode is not None or fs.spread is not None:
        raise ValueError(f"{where}: give either mode/spread or mean/std, not both")
    default: dict[str, Any] = dict(get(family).moment_ranges or {})
    if fs.mean is None and "mean" not in default:
        raise ValueError(f"{where}: {family!r} has no default mean range; give mean: [low, high]")
    given = fs.mean is not None or fs.std is not None
    mean_r = _range(fs.mean if fs.mean is not None else default["mean"])
    std_v = fs.std if given else default.get("std")
    std_r = None if std_v is None else _range(std_v)
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
    _check_reach(family, mean_r, std_r)
    return mean_r, std_r


def _check_reach(family: str, mean_r: tuple[float, float],
                 std_r: tuple[float, float] | None) -> None:
    where = f"space.families.{family}"
    region = moments.reach(family)
    lo, hi = region.mean_range
    if mean_r[1] < lo or mean_r[0] > hi:
        raise ValueError(f"{where}.mean: {family!r} reaches no mean in {list(mean_r)}; "
                         f"{region.describe()}")
    if std_r is None:
        return
    # Most of the rectangle must be reachable: the search clamps the rest to the boundary.
    pts = [(m, sd) for m in _grid(mean_r) for sd in _grid(std_r)]
    ok = 0
    for m, sd in pts:
        at = region.at(m)
        ok += at is not None and at[0] <= sd <= at[1]
    if ok < 0.5 * len(pts):
        raise ValueError(f"{where}: most of mean {list(mean_r)} x std {list(std_r)} is out "
                         f"of reach ({ok} of {len(pts)} grid points); {region.describe()}")


def _schedule(family: str, fs: FamilySpace, coords: Coords, start: Pair,
              ) -> tuple[Pair | None, tuple[list[str], tuple[float, float],
                                            tuple[float, float]] | None]:
    """(end ranges, (shapes, ramp start range, ramp end range)); (None, None) when the family
    is searched as a fixed EDF."""
    where = f"space.families.{family}"
    scheduled = any(getattr(fs, k) is not None for k in SCHEDULE_KEYS)
    if not scheduled:
        given = [k for k in RAMP_KEYS if getattr(fs, k) is not None]
        if given:
            key = "mean_end" if coords == "moments" else "mode_end"
            says = "says" if len(given) == 1 else "say"
            raise ValueError(f"{where}: {', '.join(given)} {says} how the EDF moves, but no "
                             f"end is given: add {key} (or another *_end range), or remove "
                             f"{', '.join(given)}")
        return None, None
    other = ("mode_end", "spread_end") if coords == "moments" else ("mean_end", "std_end")
    wrong = [k for k in other if getattr(fs, k) is not None]
    if wrong:
        pair = "mean/std" if coords == "moments" else "mode/spread"
        raise ValueError(f"{where}: {', '.join(wrong)} is in the other coordinates; a family "
                         f"searched in {pair} ends in {pair} too ({', '.join(SCHEDULE_KEYS)})")
    ramp = _ramp(family, fs)
    names = ("mean_end", "std_end") if coords == "moments" else ("mode_end", "spread_end")
    got = [None if getattr(fs, n) is None else _range(getattr(fs, n)) for n in names]
    end: Pair = (got[0], got[1] if start[1] is not None else None)
    for name, end_r in zip(names, end, strict=True):
        if end_r is not None and not end_r[0] <= end_r[1]:
            raise ValueError(f"{where}.{name}: need low <= high; got {list(end_r)}")
    if coords == "mode_spread":  # out-of-reach (mean, std) ends go to the nearest member
        _check_schedule_ends(family, start, end)
    return end, ramp


def _ramp(family: str, fs: FamilySpace,
          ) -> tuple[list[str], tuple[float, float], tuple[float, float]]:
    where = f"space.families.{family}"
    shapes: list[str] = [fs.ramp] if isinstance(fs.ramp, str) else list(fs.ramp or ["linear"])
    r_start = _range(fs.ramp_start if fs.ramp_start is not None else 0.0)
    r_end = _range(fs.ramp_end if fs.ramp_end is not None else 1.0)
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
    return shapes, r_start, r_end


def _check_schedule_ends(family: str, start: Pair, end: Pair) -> None:
    """Every corner of the end range must end a valid schedule from the start range."""
    modes, spreads = end[0] or start[0], end[1] or start[1]
    assert modes is not None and start[0] is not None
    first = EDF.from_mode_spread(family, mode=start[0][0],
                                 spread=None if start[1] is None else start[1][0])
    for m in modes:
        for sp in (spreads if spreads is not None else (None,)):
            try:
                EDFSchedule(first, EDF.from_mode_spread(family, mode=m, spread=sp))
            except ValueError as err:
                raise ValueError(f"space.families.{family}: the end range reaches an invalid "
                                 f"schedule ({err})") from None
