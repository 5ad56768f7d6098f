"""Emphasis schedules: an EDF that moves from one member of its family to another over training.

A fixed EDF makes one trade-off for the whole run: some EDFs learn fast and then memorise wrong
labels, others start slowly and resist memorisation. An :class:`EDFSchedule` lets the emphasis
move: it starts at ``start``, ends
at ``end`` (the same family), and a :class:`Ramp` says when and how it moves, as fractions of
the training budget::

    progress  0 ........ ramp.start ~~~~~~~~~~~ ramp.end ........ 1
    EDF       start      start      (moving)    end      end

The move is interpolated in the family's coordinates, not in its raw parameters: emphasis mode
and spread (``coords="mode_spread"``), or the mean and std of the emphasis density
(``coords="moments"``). A schedule is a pure function of progress, so a run that resumes from
a checkpoint at a given step follows the same path bit for bit.

Example:
    >>> from dm_search.edf.base import EDF
    >>> s = EDFSchedule(EDF("dm", lam=0.5, beta=16.0), EDF("dm", lam=2.0, beta=16.0))
    >>> round(s.at(0.5).mode, 4), s.at(0.5).spread
    (0.5, 16.0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dm_search.edf.base import EDF

__all__ = ["COORDS", "SHAPES", "EDFSchedule", "Ramp", "schedulable"]

SHAPES: tuple[str, ...] = ("linear", "cosine", "step")
COORDS: tuple[str, ...] = ("mode_spread", "moments")
# Families whose members have no coordinates to move along.
_FIXED = ("cce", "mae", "mse", "uniform")
# A schedule in (mean, std) solves for the member at each point: the path is cut into this many
# pieces (a solve each, cached), so a run makes at most this many solves whatever its length.
MOMENT_STEPS = 200


def schedulable(family: str) -> bool:
    """Whether members of ``family`` can move: it has an emphasis mode or spread to change."""
    return family not in _FIXED


@dataclass(frozen=True)
class Ramp:
    """When the EDF moves: from ``start`` to ``end`` (fractions of the budget), ``shape``
    linear, cosine (slow at both ends) or step (one switch halfway between start and end)."""

    shape: str = "linear"
    start: float = 0.0
    end: float = 1.0

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"ramp shape must be one of {', '.join(SHAPES)}; got "
                             f"{self.shape!r}")
        for name in ("start", "end"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= v <= 1.0:
                raise ValueError(f"ramp {name} is a fraction of the training budget in [0, 1]; "
                                 f"got {v!r}")
        if self.start > self.end:
            raise ValueError(f"ramp start ({self.start:g}) is after its end ({self.end:g}): "
                             "the EDF moves between the two, start first")

    def fraction(self, progress: float) -> float:
        """How far along the move the EDF is (0: ``start`` EDF, 1: ``end`` EDF) at
        ``progress`` (the share of the training budget done)."""
        if self.shape == "step" or self.end == self.start:
            return 1.0 if progress >= 0.5 * (self.start + self.end) else 0.0
        u = min(max((progress - self.start) / (self.end - self.start), 0.0), 1.0)
        if self.shape == "cosine":
            return 0.5 - 0.5 * math.cos(math.pi * u)
        return u

    def to_config(self) -> dict[str, Any]:
        return {"shape": self.shape, "start": float(self.start), "end": float(self.end)}


def _lerp(a: float | None, b: float | None, f: float) -> float | None:
    if a is None or b is None:
        return b if a is None else a
    return a + (b - a) * f


class EDFSchedule:
    """An EDF that moves from ``start`` to ``end`` (the same family) as training progresses.

    Args:
        start: the EDF at the beginning of training (an EDF or its config dict).
        end: the EDF once the ramp has finished; same family as ``start``.
        ramp: when and how it moves: a :class:`Ramp`, its config dict (a trial config's, with
            ``coords``, is taken as it is), or just a shape name; default linear over the
            whole budget.
        coords: "mode_spread" (interpolate the emphasis mode and spread; the default) or
            "moments" (the mean and std of the emphasis density).

    Raises:
        ValueError: the two EDFs are of different families, the family has nothing to move,
            or the coordinates do not apply to it; the message says which.
    """

    def __init__(self, start: EDF | Mapping[str, Any], end: EDF | Mapping[str, Any],
                 ramp: Ramp | Mapping[str, Any] | str | None = None, *,
                 coords: str | None = None) -> None:
        start = start if isinstance(start, EDF) else EDF.from_config(start)
        end = end if isinstance(end, EDF) else EDF.from_config(end)
        ramp, coords = _ramp_and_coords(ramp, coords)
        if start.family != end.family:
            raise ValueError(f"an emphasis schedule moves within one family: its start is "
                             f"{start.family!r} and its end {end.family!r}; give it an end "
                             f"of family {start.family!r}")
        if not schedulable(start.family):
            raise ValueError(f"EDF {start.family!r} has no parameters, so it cannot move: "
                             "schedule a family with a mode or spread (dm, normal, beta, "
                             "exponential, gce)")
        self.start, self.end, self.coords, self.ramp = start, end, coords, ramp
        if coords == "mode_spread":
            self._from = self._mode_spread(start, end)
            self._to = self._mode_spread(end, start)
            if start.family == "exponential" and start.mode != end.mode and None not in (
                    start.mode, end.mode):
                raise ValueError("EDF 'exponential' peaks at p = 0 or p = 1 only: a schedule "
                                 "in (mode, spread) can change its spread, not its mode; give "
                                 "its end the same mode (the same sign of beta), or move it in "
                                 "moments coordinates")
        else:
            self._from = (start.mean, None if _one_param(start) else start.std)
            self._to = (end.mean, None if _one_param(end) else end.std)
        self._cache: dict[float, EDF] = {0.0: start, 1.0: end}
        if coords == "mode_spread":
            try:  # the path between two valid members must itself be valid all along
                self._build(0.5)
                self._build(1.0)
            except ValueError as err:
                raise ValueError(f"{start} -> {end} cannot be interpolated in (mode, spread): "
                                 f"{err}; try coords: moments") from None

    @staticmethod
    def _mode_spread(edf: EDF, other: EDF) -> tuple[float | None, float | None]:
        # A member with no mode (spread 0: uniform weights) takes the other end's mode, so
        # the move only changes how sharp the emphasis is.
        mode = edf.mode if edf.mode is not None else other.mode
        return mode, edf.spread

    @property
    def family(self) -> str:
        return self.start.family

    def at(self, progress: float) -> EDF:
        """The EDF in force at ``progress`` in [0, 1] (the share of the budget done)."""
        f = self.ramp.fraction(progress)
        if self.coords == "moments":
            f = round(f * MOMENT_STEPS) / MOMENT_STEPS
        edf = self._cache.get(f)
        if edf is None:
            edf = self._build(f)
            if len(self._cache) > 100_000:
                self._cache = {0.0: self.start, 1.0: self.end}
            self._cache[f] = edf
        return edf

    def _build(self, f: float) -> EDF:
        a, b = _lerp(self._from[0], self._to[0], f), _lerp(self._from[1], self._to[1], f)
        if self.coords == "moments":
            from dm_search.edf.moments import nearest

            assert a is not None
            return nearest(self.family, a, b)
        if a is None:  # both ends without a mode: uniform at either end
            return self.start
        return EDF.from_mode_spread(self.family, mode=a, spread=b)

    def path(self, points: int = 11) -> list[EDF]:
        """The EDFs in force at ``points`` evenly spaced moments of training, start to end."""
        return [self.at(i / (points - 1)) for i in range(points)]

    def to_config(self) -> dict[str, Any]:
        """``{"edf": ..., "edf_end": ..., "ramp": {...}, "coords": ...}``, JSON/YAML-safe."""
        return {"edf": self.start.to_config(), "edf_end": self.end.to_config(),
                "ramp": self.ramp.to_config(), "coords": self.coords}

    @staticmethod
    def from_config(config: Mapping[str, Any]) -> EDFSchedule:
        """Inverse of :meth:`to_config` (``ramp`` and ``coords`` may be left out)."""
        missing = [k for k in ("edf", "edf_end") if k not in config]
        if missing:
            raise ValueError(f"an emphasis schedule needs {' and '.join(missing)} (EDF "
                             "configs of one family); got keys "
                             f"{', '.join(map(str, config)) or 'none'}")
        return EDFSchedule(config["edf"], config["edf_end"], config.get("ramp"),
                           coords=config.get("coords"))

    def label(self) -> str:
        r = self.ramp
        where = "" if self.coords == "mode_spread" else ", in mean/std"
        return f"{self.start} -> {self.end} ({r.shape} {r.start:.3g}-{r.end:.3g}{where})"

    def __repr__(self) -> str:
        return (f"EDFSchedule({self.start!r}, {self.end!r}, {self.ramp!r}, "
                f"coords={self.coords!r})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EDFSchedule):
            return NotImplemented
        return self.to_config() == other.to_config()

    def __hash__(self) -> int:
        return hash(repr(self))


def _ramp_and_coords(ramp: Ramp | Mapping[str, Any] | str | None, coords: str | None,
                     ) -> tuple[Ramp, str]:
    if isinstance(ramp, str):
        ramp = {"shape": ramp}
    if ramp is not None and not isinstance(ramp, Ramp | Mapping):
        raise ValueError(f"ramp is a Ramp, a mapping (shape, start, end) or a shape name; got "
                         f"{ramp!r}")
    given = dict(ramp) if isinstance(ramp, Mapping) else {}
    inner = given.pop("coords", None)
    if coords is not None and inner is not None and coords != inner:
        raise ValueError(f"coords given twice, as {coords!r} and in the ramp as {inner!r}")
    coords = coords or inner or "mode_spread"
    if coords not in COORDS:
        raise ValueError(f"schedule coords must be one of {', '.join(COORDS)}; got {coords!r}")
    unknown = sorted(set(given) - {"shape", "start", "end"})
    if unknown:
        raise ValueError(f"ramp takes shape, start and end (and coords); unknown: "
                         f"{', '.join(unknown)}")
    return (ramp if isinstance(ramp, Ramp) else Ramp(**given)), coords


def _one_param(edf: EDF) -> bool:
    return edf.family in ("exponential", "gce")
