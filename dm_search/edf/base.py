"""Emphasis density functions (EDFs): how much each example counts, as a function of p.

An EDF ``w(p)`` maps the probability ``p`` that the model gives an example's (possibly wrong)
label to the magnitude of that example's gradient (docs/method.md, "One gradient, many
magnitudes"). Every family is written in log space, ``log w(p)``, so that derivative
normalisation over a batch is a softmax of log-weights and stays finite for large ``beta``.

Families live in a registry: a new one is one class decorated with :func:`register`.
``EDF("dm", lam=0.5, beta=8.0)`` builds the registered family by name.

Example:
    >>> edf = EDF("dm", lam=0.5, beta=8.0)
    >>> round(edf.mode, 4)
    0.3333
    >>> EDF.from_mode_spread("dm", mode=1 / 3, spread=12.0).to_config()
    {'family': 'dm', 'lam': 0.5, 'beta': 12.0}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor

from dm_search.common.labels import edf_label, edf_repr
from dm_search.common.registry import Registry

__all__ = ["EDF", "ParamSpec", "density_moments", "from_spec_string", "get", "names",
           "parse_params", "register"]


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of a family: its bounds and a default with the reason for it."""

    name: str
    default: float | None
    low: float = -math.inf
    high: float = math.inf
    low_inclusive: bool = True
    high_inclusive: bool = True
    doc: str = ""

    def allowed(self) -> str:
        lo = "[" if self.low_inclusive and math.isfinite(self.low) else "("
        hi = "]" if self.high_inclusive and math.isfinite(self.high) else ")"
        return f"{lo}{self.low:g}, {self.high:g}{hi}"

    def check(self, family: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(
                f"EDF {family!r}: parameter {self.name!r} must be a number, got "
                f"{value!r} ({type(value).__name__}); allowed range {self.allowed()}."
            )
        v = float(value)
        ok = math.isfinite(v)
        ok = ok and (v >= self.low if self.low_inclusive else v > self.low)
        ok = ok and (v <= self.high if self.high_inclusive else v < self.high)
        if not ok:
            raise ValueError(
                f"EDF {family!r}: parameter {self.name!r}={value!r} is outside the allowed "
                f"range {self.allowed()}. {self.doc}".rstrip()
            )
        return v


_REGISTRY: Registry[type[EDF]] = Registry("EDF family", plural="families")
_F = TypeVar("_F", bound="type[EDF]")


def register(name: str) -> Callable[[_F], _F]:
    """Class decorator adding an :class:`EDF` subclass to the family registry under ``name``."""

    def deco(cls: _F) -> _F:
        cls.family = name
        _REGISTRY.register(name)(cls)
        return cls

    return deco


def names() -> list[str]:
    """Names of the registered EDF families, sorted."""
    return _REGISTRY.names()


def get(name: str) -> type[EDF]:
    """The EDF class registered under ``name``; unknown names list the known ones."""
    return _REGISTRY.get(name)


class EDF:
    """Base class of the EDF families; ``EDF(name, **params)`` builds the family ``name``.

    Subclasses declare ``params`` (a tuple of :class:`ParamSpec`) and implement
    :meth:`_log_weight` and :meth:`_mode`. They may implement :meth:`_from_mode_spread` and
    :meth:`_spread` when the family can be addressed by (emphasis mode, spread).

    Attributes:
        family: registered name of the family.
        params: validated parameters, in declaration order, as plain floats.
    """

    family: ClassVar[str] = ""
    param_specs: ClassVar[tuple[ParamSpec, ...]] = ()
    # Where a search looks when a spec lists the family without ranges of its own: its mode
    # and spread (a number fixes one), and the mean and std of its emphasis density (mean only
    # for a one-parameter family). None: the family has nothing to search.
    search_ranges: ClassVar[Mapping[str, Any] | None] = None
    moment_ranges: ClassVar[Mapping[str, Any] | None] = None
    description: ClassVar[str] = ""

    def __new__(cls, family: str | None = None, /, **params: Any) -> EDF:
        if cls is EDF:
            if family is None:
                raise TypeError("EDF() needs a family name, e.g. EDF('dm', lam=0.5, beta=8.0)")
            return super().__new__(get(family))
        return super().__new__(cls)

    def __init__(self, family: str | None = None, /, **params: Any) -> None:
        if family is not None and family != self.family:
            raise ValueError(f"{type(self).__name__} is family {self.family!r}, not {family!r}")
        known = {s.name for s in self.param_specs}
        unknown = sorted(set(params) - known)
        if unknown:
            allowed = ", ".join(sorted(known)) or "none"
            raise ValueError(
                f"EDF {self.family!r} got unknown parameter(s) {', '.join(unknown)}; "
                f"its parameters are: {allowed}."
            )
        values: dict[str, float] = {}
        for spec in self.param_specs:
            if spec.name in params:
                values[spec.name] = spec.check(self.family, params[spec.name])
            elif spec.default is not None:
                values[spec.name] = spec.default
            else:
                raise ValueError(
                    f"EDF {self.family!r} needs parameter {spec.name!r} in {spec.allowed()}."
                )
        self._params = values
        self._validate()

    # ----------------------------------------------------------------- family contract
    def _validate(self) -> None:
        """Cross-parameter checks; raise ValueError saying what is allowed."""

    def _log_weight(self, log_p: Tensor, log_1mp: Tensor) -> Tensor:
        """log w(p) from log p and log(1 - p): same shape, finite (clamped at the dtype's
        lowest value where p is 0 or 1), so that 0 * log 0 terms vanish instead of giving NaN.

        Kept to a handful of whole-tensor operations: it runs on every training step."""
        raise NotImplementedError

    def _mode(self) -> float | None:
        """Closed-form argmax of w on [0, 1]; None when w is constant."""
        raise NotImplementedError

    def coefficients(self) -> tuple[float, ...] | None:
        """The family's log-weight as the eight coefficients (c, a, b, k, m, n, r, s) of
        ``c + a log p + b log(1-p) + k exp(m log p + n log(1-p)) + r p + s p^2``, or None
        when it is not of that form. The fused loss (``DMLoss(..., compile=True)``) evaluates
        this form with the coefficients as data, so that one compiled kernel serves every EDF;
        a family without it trains on the eager path."""
        return None

    def _spread(self) -> float | None:
        return None

    @classmethod
    def _from_mode_spread(cls, mode: float, spread: float | None) -> dict[str, float]:
        raise ValueError(
            f"EDF family {cls.family!r} has no (mode, spread) coordinates; build it with "
            f"EDF({cls.family!r}, ...) instead."
        )

    # ----------------------------------------------------------------- public API
    @property
    def params(self) -> dict[str, float]:
        """The family's parameters as a new dict of floats."""
        return dict(self._params)

    @property
    def mode(self) -> float | None:
        """Emphasis mode psi = argmax_p w(p) in [0, 1] (0: hardest, 1: easiest examples count
        most); None when w is constant (uniform weighting)."""
        return self._mode()

    @property
    def spread(self) -> float | None:
        """How sharply the emphasis concentrates (beta for dm/normal, |beta| for exponential,
        alpha + eta - 2 for beta); None for families without a free spread."""
        return self._spread()

    @property
    def mean(self) -> float:
        """Mean of w normalised to a density on [0, 1]: where the emphasis sits on average."""
        return density_moments(self)[0]

    @property
    def std(self) -> float:
        """Standard deviation of w normalised to a density on [0, 1]: how widely the emphasis
        is spread (uniform weights: 1/sqrt(12), about 0.289)."""
        return density_moments(self)[1]

    # The inverse of mean/std lives in dm_search.edf.moments, which sets this when the package
    # loads: the solver needs the families, and the families need no solver.
    from_moments: ClassVar[Callable[..., EDF]]

    def log_weight(self, p: Tensor) -> Tensor:
        """log w(p) for probabilities ``p`` of any shape (computed in p's dtype)."""
        p = torch.as_tensor(p)
        if not torch.is_floating_point(p):
            p = p.to(torch.get_default_dtype())
        low = torch.finfo(p.dtype).min
        return self._log_weight(torch.log(p).clamp(min=low), torch.log1p(-p).clamp(min=low))

    def log_weight_from_logs(self, log_p: Tensor, log_1mp: Tensor) -> Tensor:
        """log w from finite log p and log(1 - p): the stable entry point used by DMLoss."""
        return self._log_weight(log_p, log_1mp)

    def weight(self, p: Tensor) -> Tensor:
        """w(p) for probabilities ``p`` of any shape."""
        return torch.exp(self.log_weight(p))

    def to_config(self) -> dict[str, Any]:
        """A flat, JSON/YAML-safe dict: ``{"family": "dm", "lam": 0.5, "beta": 8.0}``."""
        return {"family": self.family, **self._params}

    @staticmethod
    def from_config(config: Mapping[str, Any]) -> EDF:
        """Inverse of :meth:`to_config`."""
        if not isinstance(config, Mapping) or "family" not in config:
            raise ValueError(
                f"An EDF config is a mapping with a 'family' key and the family's parameters, "
                f"e.g. {{'family': 'dm', 'lam': 0.5, 'beta': 8.0}}; got {config!r}."
            )
        params = dict(config)
        family = params.pop("family")
        return EDF(family, **params)

    @staticmethod
    def from_mode_spread(family: str, *, mode: float, spread: float | None = None) -> EDF:
        """Build a family from its emphasis mode in [0, 1] and its spread (>= 0).

        ``dm``: lam = mode / (1 - mode), beta = spread. ``normal``: psi = mode, beta = spread.
        ``exponential``: mode 0 or 1, beta = +spread or -spread. ``beta``: alpha = 1 +
        mode * spread, eta = 1 + (1 - mode) * spread. ``gce``: q = mode / (1 - mode), no spread.
        """
        cls = get(family)
        m = ParamSpec("mode", None, 0.0, 1.0).check(family, mode)
        s = None if spread is None else ParamSpec("spread", None, 0.0).check(family, spread)
        return cls(**cls._from_mode_spread(m, s))

    def __repr__(self) -> str:
        return edf_repr(self.to_config())

    def __str__(self) -> str:
        """A short label for plots and logs: ``dm(lam=0.5, beta=8)``."""
        return edf_label(self.to_config())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EDF):
            return NotImplemented
        return self.family == other.family and self._params == other._params

    def __hash__(self) -> int:
        return hash((self.family, tuple(self._params.items())))


# Tanh-sinh quadrature on (0, 1), kept in log space: the nodes crowd towards both ends
# double-exponentially, so integrable end-point singularities (beta family with alpha or eta
# below 1) and sharp bumps (large spreads) both converge to double precision; log p and
# log(1 - p) are exact even where p itself underflows.
_QUAD_H = 1.0 / 96.0
_QUAD_T = 6.5
_QUAD: tuple[Tensor, Tensor, Tensor, Tensor] | None = None


def _quadrature() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    global _QUAD
    if _QUAD is None:
        n = round(_QUAD_T / _QUAD_H)
        t = torch.arange(-n, n + 1, dtype=torch.float64) * _QUAD_H
        u = math.pi * torch.sinh(t)
        log_p = -torch.nn.functional.softplus(-u)  # log sigmoid(u)
        log_1mp = -torch.nn.functional.softplus(u)
        log_dp = torch.log(_QUAD_H * math.pi * torch.cosh(t)) + log_p + log_1mp
        _QUAD = (log_p, log_1mp, log_dp, torch.exp(log_p))
    return _QUAD


_MOMENTS_CACHE: dict[tuple[str, tuple[float, ...]], tuple[float, float]] = {}


def density_moments(edf: EDF) -> tuple[float, float]:
    """(mean, std) of ``w(p)`` normalised to a probability density on [0, 1]."""
    key = (edf.family, tuple(edf.params.values()))
    if key not in _MOMENTS_CACHE:
        log_p, log_1mp, log_dp, p = _quadrature()
        log_f = edf.log_weight_from_logs(log_p, log_1mp).to(torch.float64) + log_dp
        density = torch.softmax(log_f, 0)
        mean = float(torch.dot(density, p))
        var = float(torch.dot(density, (p - mean) ** 2))
        if len(_MOMENTS_CACHE) > 100_000:
            _MOMENTS_CACHE.clear()
        _MOMENTS_CACHE[key] = (mean, math.sqrt(max(var, 0.0)))
    return _MOMENTS_CACHE[key]


def parse_params(items: Iterable[str]) -> dict[str, float]:
    """``["lam=0.5", "beta=8"]`` -> ``{"lam": 0.5, "beta": 8.0}``."""
    params: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected key=value, got {item!r} (e.g. beta=8)")
        try:
            params[key.strip()] = float(value)
        except ValueError:
            raise ValueError(f"{key.strip()}={value!r} is not a number") from None
    return params


def from_spec_string(text: str) -> EDF:
    """Parse ``"family"`` or ``"family:k=v,k=v"`` (the CLI's compact EDF notation)."""
    family, _, rest = text.partition(":")
    try:
        params = parse_params(filter(None, (s.strip() for s in rest.split(","))))
    except ValueError as err:
        raise ValueError(f"EDF spec {text!r}: {err}") from None
    return EDF(family.strip(), **params)
