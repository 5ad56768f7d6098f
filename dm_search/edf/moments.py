"""Mean/std coordinates of the EDF families: invert (mean, std) to a family's parameters, and
describe which pairs a family can reach.

Every EDF ``w(p)``, normalised to a density on [0, 1], has a mean (where the emphasis sits on
average) and a standard deviation (how widely it is spread). Unlike (mode, spread), whose
spread means something different in each family, these two numbers put every family on the
same axes. ``EDF.mean`` / ``EDF.std`` compute them by quadrature
(:func:`dm_search.edf.base.density_moments`); this module goes the other way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from dm_search.edf.base import EDF, get

__all__ = ["Reach", "has_moments", "nearest", "reach", "solve"]

# How far the searches for parameters may go; the families' supports are wider, but beyond
# these the density is a spike (std below ~1e-2) or indistinguishable from the bounds' limit.
_LOG_LO, _LOG_HI = math.log(1e-2), math.log(2e3)
TOL = 1e-6


@dataclass(frozen=True)
class _TwoParam:
    """A two-parameter family in coordinates x in a box, and the map to its parameters."""

    lower: tuple[float, float]
    upper: tuple[float, float]
    params: Callable[[np.ndarray], dict[str, float]]


_TWO: dict[str, _TwoParam] = {
    # dm: emphasis mode in [0, 0.995] and log spread; lam = mode / (1 - mode).
    "dm": _TwoParam((0.0, _LOG_LO), (0.995, _LOG_HI),
                    lambda x: {"lam": float(x[0] / (1.0 - x[0])), "beta": float(math.exp(x[1]))}),
    "normal": _TwoParam((0.0, _LOG_LO), (1.0, _LOG_HI),
                        lambda x: {"psi": float(x[0]), "beta": float(math.exp(x[1]))}),
    "beta": _TwoParam((_LOG_LO, _LOG_LO), (_LOG_HI, _LOG_HI),
                      lambda x: {"alpha": float(math.exp(x[0])), "eta": float(math.exp(x[1]))}),
}
# One free parameter: the mean alone fixes the member (the mean is monotone in it).
_ONE: dict[str, tuple[str, float, float]] = {
    "exponential": ("beta", -2e3, 2e3),
    "gce": ("q", 1e-6, 1.0),
}


def has_moments(family: str) -> str:
    """'two' (mean and std free), 'one' (mean free, std follows) or 'none' (a fixed EDF)."""
    get(family)
    return "two" if family in _TWO else "one" if family in _ONE else "none"


def _mstd(family: str, params: dict[str, float]) -> tuple[float, float]:
    e = EDF(family, **params)
    return e.mean, e.std


@cache
def _table(family: str) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates on a grid over the family's box and their (mean, std)."""
    if family in _ONE:
        name, lo, hi = _ONE[family]
        xs = np.linspace(lo, hi, 801) if family == "gce" else np.concatenate(
            [-np.geomspace(hi, 1e-3, 200), [0.0], np.geomspace(1e-3, hi, 200)])
        ms = np.array([_mstd(family, {name: float(x)}) for x in xs])
        return xs[:, None], ms
    fam = _TWO[family]
    # Denser towards both ends of the first coordinate, where the region's edges are.
    u = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, 51))
    a = fam.lower[0] + (fam.upper[0] - fam.lower[0]) * u
    b = np.linspace(fam.lower[1], fam.upper[1], 41)
    xs = np.array([(u, v) for u in a for v in b])
    ms = np.array([_mstd(family, fam.params(x)) for x in xs])
    return xs, ms


@dataclass(frozen=True)
class Reach:
    """What a family reaches: its mean range, and per mean bin the std range."""

    family: str
    mean_range: tuple[float, float]
    bins: list[tuple[float, float, float]]  # (mean, lowest std, highest std)

    def at(self, mean: float) -> tuple[float, float] | None:
        """The std range reachable at ``mean`` (from the nearest bin), None outside."""
        if not self.mean_range[0] <= mean <= self.mean_range[1] or not self.bins:
            return None
        _, lo, hi = min(self.bins, key=lambda b: abs(b[0] - mean))
        return lo, hi

    def describe(self) -> str:
        lo, hi = self.mean_range
        if not self.bins:
            return (f"{self.family} reaches mean about {lo:.3f} to {hi:.3f}, std fixed by the "
                    "mean")
        parts = ", ".join(f"at {m:.2f}: {a:.3f}-{b:.3f}" for m, a, b in self.bins[::2])
        return (f"{self.family} reaches mean about {lo:.3f} to {hi:.3f}; std by mean, "
                f"roughly: {parts}")


@cache
def reach(family: str) -> Reach:
    """The reachable (mean, std) region of ``family``, from a grid over its parameters."""
    kind = has_moments(family)
    if kind == "none":
        e = EDF(family)
        return Reach(family, (e.mean, e.mean), [(e.mean, e.std, e.std)])
    _, ms = _table(family)
    lo, hi = float(ms[:, 0].min()), float(ms[:, 0].max())
    if kind == "one":
        return Reach(family, (lo, hi), [])
    bins = []
    for c in np.arange(0.05, 1.0, 0.05):
        sel = ms[np.abs(ms[:, 0] - c) <= 0.02]
        if len(sel):
            bins.append((round(float(c), 2), float(sel[:, 1].min()), float(sel[:, 1].max())))
    return Reach(family, (lo, hi), bins)


def nearest(family: str, mean: float, std: float | None = None) -> EDF:
    """The family member whose (mean, std) is closest to the pair asked for (the pair itself
    where it is reachable). Searches use it so that every sampled point trains some EDF."""
    # scipy loads here, not with the package: every import of dm_search.edf (a Ray worker,
    # `dm-search train`, a user's `from dm_search import EDF`) would pay half a second for it.
    from scipy.optimize import brentq, least_squares

    kind = has_moments(family)
    if kind == "none":
        return EDF(family)
    xs, ms = _table(family)
    if kind == "one":
        name, lo, hi = _ONE[family]
        sign = 1.0 if ms[-1, 0] > ms[0, 0] else -1.0  # the mean's direction in the parameter

        def f(x: float) -> float:
            return _mstd(family, {name: x})[0] - mean

        if sign * f(hi) <= 0:
            return EDF(family, **{name: hi})
        if sign * f(lo) >= 0:
            return EDF(family, **{name: lo})
        return EDF(family, **{name: _round(brentq(f, lo, hi, xtol=1e-12, rtol=1e-12))})
    assert std is not None
    fam = _TWO[family]
    target = np.array([mean, std])

    def residual(x: np.ndarray) -> np.ndarray:
        return np.array(_mstd(family, fam.params(x))) - target

    # Several starts (the closest grid points): near the edge of the region the nearest point
    # can lie in a different corner of the parameter box than the first guess.
    best: Any = None
    for k in np.argsort(((ms - target) ** 2).sum(1))[:4]:
        sol = least_squares(residual, xs[k], bounds=(fam.lower, fam.upper), xtol=1e-14,
                            ftol=1e-14, gtol=1e-14, diff_step=1e-7, max_nfev=200)
        if best is None or sol.cost < best.cost:
            best = sol
        if best.cost < 1e-20:
            break
    params = {k: _round(v) for k, v in fam.params(best.x).items()}
    return EDF(family, **params)


def _round(v: float) -> float:
    """Ten significant digits: far below what the moments can tell apart, and the label reads
    lam=1 rather than lam=1.000000000000016."""
    return float(f"{v:.10g}")


def from_moments(family: str, *, mean: float, std: float | None = None) -> EDF:
    """The member of ``family`` whose emphasis density has this mean and standard deviation.

    Families with one free parameter (exponential, gce) are fixed by their mean alone; give
    ``std`` only to check it. A pair the family cannot reach raises ValueError saying what it
    reaches (``dm-search edf describe FAMILY`` shows the whole region)."""
    return solve(family, mean, std)


def solve(family: str, mean: float, std: float | None) -> EDF:
    """``EDF.from_moments``: the exact member, or ValueError saying what is reachable."""
    kind = has_moments(family)
    if kind == "none":
        raise ValueError(f"EDF family {family!r} has no free parameters: its mean and std are "
                         f"fixed ({EDF(family).mean:.4f}, {EDF(family).std:.4f})")
    for what, v in (("mean", mean), ("std", std)):
        if v is not None and not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
            raise ValueError(f"EDF {family!r}: {what} must be a finite number >= 0, got {v!r}")
    if kind == "two" and std is None:
        raise ValueError(f"EDF {family!r} has two free parameters: give both mean and std")
    edf = nearest(family, mean, std)
    err_mean = abs(edf.mean - mean)
    err_std = 0.0 if std is None else abs(edf.std - std)
    if err_mean > TOL or err_std > TOL:
        region = reach(family)
        at = region.at(mean)
        where = (f"at mean {mean:g} its std can be about {at[0]:.3f} to {at[1]:.3f}" if at and
                 kind == "two" else f"at mean {mean:g} its std is {edf.std:.4f}"
                 if kind == "one" and err_mean <= TOL else
                 f"its mean can be about {region.mean_range[0]:.3f} to "
                 f"{region.mean_range[1]:.3f}")
        raise ValueError(
            f"EDF {family!r} cannot reach mean {mean:g}"
            + ("" if std is None else f", std {std:g}")
            + f": {where}; the nearest it reaches is mean {edf.mean:.4f}, std {edf.std:.4f} "
            f"({edf}). See `dm-search edf describe {family}`."
        )
    return edf


EDF.from_moments = staticmethod(from_moments)
