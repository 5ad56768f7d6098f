"""The built-in EDF families, each registered by name, with the ranges a search uses when a spec
lists the family without its own (its ``search_ranges`` in mode/spread and ``moment_ranges`` in
mean/std of the emphasis density)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from dm_search.edf.base import EDF, ParamSpec, register

_LOG2 = math.log(2.0)
_LOG4 = math.log(4.0)

def _require_spread(family: str, spread: float | None) -> float:
    if spread is None:
        raise ValueError(f"EDF family {family!r} needs a spread (>= 0) with its mode")
    return spread


@register("dm")
class DMEDF(EDF):
    description = "exp(beta * p^lam * (1 - p)): the paper's main family (Eq. 9)"
    param_specs = (
        ParamSpec("lam", 0.5, 0.0, doc="lam >= 0 sets the emphasis mode lam / (lam + 1)."),
        # The paper only uses beta > 0; beta < 0 would put the weight on both ends at once.
        ParamSpec("beta", 8.0, 0.0, doc="beta >= 0 is the spread; 0 gives uniform weights."),
    )
    # Wide enough to hold the paper's settings (modes 0 to 2/3). The spread starts at 4: on
    # MNIST-1D no spread below 4 ever won, and spreads of 32 and more collapse training at
    # modes up to 1/2 (benchmarks/RESULTS.md).
    search_ranges: ClassVar[Mapping[str, Any]] = {"mode": (0.0, 0.75), "spread": (4.0, 24.0)}
    moment_ranges: ClassVar[Mapping[str, Any]] = {"mean": (0.2, 0.7), "std": (0.12, 0.29)}

    def _log_weight(self, log_p: Tensor, log_1mp: Tensor) -> Tensor:
        lam, beta = self._params["lam"], self._params["beta"]
        return torch.add(log_1mp, log_p, alpha=lam).exp_().mul_(beta)

    def coefficients(self) -> tuple[float, ...]:
        return (0.0, 0.0, 0.0, self._params["beta"], self._params["lam"], 1.0, 0.0, 0.0)

    def _mode(self) -> float | None:
        lam = self._params["lam"]
        return None if self._params["beta"] == 0 else lam / (lam + 1.0)

    def _spread(self) -> float | None:
        return self._params["beta"]

    @classmethod
    def _from_mode_spread(cls, mode: float, spread: float | None) -> dict[str, float]:
        if mode >= 1.0:
            raise ValueError("EDF 'dm': mode must be < 1 (lam = mode / (1 - mode) is infinite)")
        # Rounded so that mode 1/3 gives lam 0.5, not 0.49999999999999994.
        return {"lam": round(mode / (1.0 - mode), 12), "beta": _require_spread("dm", spread)}


@register("normal")
class NormalEDF(EDF):
    description = "exp(-beta * p * (p - 2 psi)): a Gaussian bump at psi (Eq. 10)"
    param_specs = (
        ParamSpec("psi", 0.5, 0.0, 1.0, doc="psi is the emphasis mode."),
        ParamSpec("beta", 4.0, 0.0, doc="beta >= 0 is the spread; 0 gives uniform weights."),
    )
    search_ranges: ClassVar[Mapping[str, Any]] = {"mode": (0.0, 1.0), "spread": (0.5, 24.0)}
    moment_ranges: ClassVar[Mapping[str, Any]] = {"mean": (0.1, 0.9), "std": (0.12, 0.28)}

    def _log_weight(self, log_p: Tensor, log_1mp: Tensor) -> Tensor:
        psi, beta = self._params["psi"], self._params["beta"]
        p = torch.exp(log_p)
        return (p - 2.0 * psi).mul_(p).mul_(-beta)

    def coefficients(self) -> tuple[float, ...]:
        psi, beta = self._params["psi"], self._params["beta"]
        return (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0 * beta * psi, -beta)

    def _mode(self) -> float | None:
        return None if self._params["beta"] == 0 else self._params["psi"]

    def _spread(self) -> float | None:
        return self._params["beta"]

    @classmethod
    def _from_mode_spread(cls, mode: float, spread: float | None) -> dict[str, float]:
        return {"psi": mode, "beta": _require_spread("normal", spread)}


@register("exponential")
class ExponentialEDF(EDF):
    description = "exp(beta * (1 - p)): beta > 0 favours hard examples, beta < 0 easy ones"
    param_specs = (ParamSpec("beta", 1.0, doc="any finite beta; 0 gives uniform weights."),)
    search_ranges: ClassVar[Mapping[str, Any]] = {"mode": 0.0, "spread": (0.1, 8.0)}
    moment_ranges: ClassVar[Mapping[str, Any]] = {"mean": (0.05, 0.5)}

    def _log_weight(self, log_p: Tensor, log_1mp: Tensor) -> Tensor:
        return torch.exp(log_1mp).mul_(self._params["beta"])

    def coefficients(self) -> tuple[float, ...]:
        return (0.0, 0.0, 0.0, self._params["beta"], 0.0, 1.0, 0.0, 0.0)

    def _mode(self) -> float | None:
        beta = self._params["beta"]
        return None if beta == 0 else (0.0 if beta > 0 else 1.0)

    def _spread(self) -> float | None:
        return abs(self._params["beta"])

    @classmethod
    def _from_mode_spread(cls, mode: float, spread: float | None) -> dict[str, float]:
        if mode not in (0.0, 1.0):
            raise ValueError(
                f"EDF 'exponential' peaks only at p = 0 or p = 1, so its mode must be 0 or 1; "
                f"got {mode!r}. Use 'dm' or 'normal' for a mode in between."
            )
        s = _require_spread("exponential", spread)
        return {"beta": s if mode == 0.0 else -s}


@register("beta")
class BetaEDF(EDF):
    description = "p^(alpha-1) (1-p)^(eta-1): a Beta-distribution shape (Eq. 12)"
    param_specs = (
        ParamSpec("alpha", 2.0, 0.0, low_inclusive=False, doc="alpha > 0."),
        ParamSpec("eta", 2.0, 0.0, low_inclusive=False, doc="eta > 0."),
    )
    search_ranges: ClassVar[Mapping[str, Any]] = {"mode": (0.0, 1.0), "spread": (0.5, 24.0)}
    moment_ranges: ClassVar[Mapping[str, Any]] = {"mean": (0.1, 0.9), "std": (0.12, 0.28)}

    def _log_weight(self, log_p: Tensor, log_1mp: Tensor) -> Tensor:
        a, e = self._params["alpha"] - 1.0, self._params["eta"] - 1.0
        return torch.add(log_p.mul(a), log_1mp, alpha=e)

    def coefficients(self) -> tuple[float, ...]:
        a, e = self._params["alpha"] - 1.0, self._params["eta"] - 1.0
        return (0.0, a, e, 0.0, 0.0, 0.0, 0.0, 0.0)

    def _mode(self) -> float | None:
        a, e = self._params["alpha"], self._params["eta"]
        if a == 1.0 and e == 1.0:
            return None
        if a >= 1.0 and e >= 1.0:
            return (a - 1.0) / (a + e - 2.0)
        if a < 1.0 and e < 1.0:
            # U-shaped: both ends grow without bound; the faster one (smaller exponent) wins.
            return 0.0 if a <= e else 1.0
        return 0.0 if a < 1.0 else 1.0

    def _spread(self) -> float | None:
        return self._params["alpha"] + self._params["eta"] - 2.0

    @classmethod
    def _from_mode_spread(cls, mode: float, spread: float | None) -> dict[str, float]:
        s = _require_spread("beta", spread)
        return {"alpha": 1.0 + mode * s, "eta": 1.0 + (1.0 - mode) * s}


@register("cce")
class CCEEDF(EDF):
    description = "2 (1 - p): categorical cross-entropy's weighting"

    def _log_weight(self, log_p: Tensor, log_1mp: Tensor) -> Tensor:
        return log_1mp + _LOG2

    def coefficients(self) -> tuple[float, ...]:
        return (_LOG2, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0)

    def _mode(self) -> float | None:
        return 0.0


@register("mae")
class MAEEDF(EDF):
    description = "2 p (1 - p): mean absolute error's weighting"

    def _log_weight(self, log_p: Tensor, log_1mp: Tensor) -> Tensor:
        return torch.add(log_p, log_1mp).add_(_LOG2)

    def coefficients(self) -> tuple[float, ...]:
        return (_LOG2, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0)

    def _mode(self) -> float | None:
        return 0.5


@register("mse")
class MSEEDF(EDF):
    description = "4 p (1 - p)^2: mean squared error's weighting (only p pushed)"

    def _log_weight(self, log_p: Tensor, log_1mp: Tensor) -> Tensor:
        return torch.add(log_p, log_1mp, alpha=2.0).add_(_LOG4)

    def coefficients(self) -> tuple[float, ...]:
        return (_LOG4, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0)

    def _mode(self) -> float | None:
        return 1.0 / 3.0


@register("gce")
class GCEEDF(EDF):
    description = "2 p^q (1 - p): generalised cross-entropy's weighting"
    # q = 0.7 is the GCE authors' recommended setting.
    param_specs = (ParamSpec("q", 0.7, 0.0, 1.0, low_inclusive=False, doc="q in (0, 1]."),)
    search_ranges: ClassVar[Mapping[str, Any]] = {"mode": (0.1, 0.5)}
    moment_ranges: ClassVar[Mapping[str, Any]] = {"mean": (0.34, 0.5)}

    def _log_weight(self, log_p: Tensor, log_1mp: Tensor) -> Tensor:
        return torch.add(log_1mp, log_p, alpha=self._params["q"]).add_(_LOG2)

    def coefficients(self) -> tuple[float, ...]:
        return (_LOG2, self._params["q"], 1.0, 0.0, 0.0, 0.0, 0.0, 0.0)

    def _mode(self) -> float | None:
        q = self._params["q"]
        return q / (q + 1.0)

    @classmethod
    def _from_mode_spread(cls, mode: float, spread: float | None) -> dict[str, float]:
        if spread is not None:
            raise ValueError("EDF 'gce' has no spread; give only its mode in (0, 0.5]")
        if not 0.0 < mode <= 0.5:
            raise ValueError(f"EDF 'gce': mode q / (q + 1) must be in (0, 0.5]; got {mode!r}")
        return {"q": round(mode / (1.0 - mode), 12)}


@register("uniform")
class UniformEDF(EDF):
    description = "1: every example counts the same"

    def _log_weight(self, log_p: Tensor, log_1mp: Tensor) -> Tensor:
        return torch.zeros_like(log_p)

    def coefficients(self) -> tuple[float, ...]:
        return (0.0,) * 8

    def _mode(self) -> float | None:
        return None
