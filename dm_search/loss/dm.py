"""DMLoss: a classification loss whose gradient is written down, not derived.

For logits ``z_i`` (C classes) and label ``y_i``, with ``p_i = softmax(z_i)[y_i]``, the gradient
DMLoss sends back to the logits is, per example (docs/method.md, "The gradient DM sends to the
logits")::

    g_i = w~_i * s_i * 1/2 * (softmax(z_i with the target logit masked out) - onehot(y_i))

- ``1/2 (softmax_masked - onehot)`` equals ``(softmax - onehot) / (2 (1 - p))``: the direction
  every common loss shares, scaled to unit L1 norm, computed without dividing by ``1 - p``.
- ``w~_i`` is the example's weight from the EDF: ``softmax_i(log w(p))`` over the batch with
  derivative normalisation (``normalise="batch"``), else ``w(p_i) / B``. Weights are constants
  of the step (never back-propagated through), computed in float32 or wider.
- ``s_i = (1 - p_i) / ((1 - p_i) + eps)`` lets the push fade once an example is fitted to
  within ``eps``; without it (``eps=0``) logit margins can grow without bound under DN and
  training can collapse (docs/method.md).

With ``normalise="none"`` and ``eps=0`` the loss-equivalent families reproduce the autograd
gradients of mean CE (``cce``), MAE (``mae``), MSE (``mse``) and GCE (``gce``).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dm_search.edf.base import EDF
from dm_search.edf.schedule import EDFSchedule
from dm_search.loss.autograd import DMFunction, FusedDMFunction, check_inputs
from dm_search.loss.guard import TrainingCollapsed, collapse_signs, logit_health

__all__ = ["NORMALISATIONS", "DMLoss", "dm_loss"]

Normalise = Literal["batch", "none"]
_WARNED: dict[str, bool] = {}  # families already warned about having no fused form
NORMALISATIONS: tuple[str, ...] = ("batch", "none")


def dm_loss(
    logits: Tensor,
    target: Tensor,
    edf: EDF,
    *,
    normalise: Normalise = "batch",
    eps: float = 5e-7,
    ignore_index: int = -100,
) -> tuple[Tensor, Tensor]:
    """Functional DM loss.

    Args:
        logits: (N, C) floating-point logits.
        target: (N,) integer labels; entries equal to ``ignore_index`` get zero weight.
        edf: the emphasis density function.
        normalise: "batch" (derivative normalisation) or "none" (w / B).
        eps: saturation scale; 0 gives the exact unit-norm direction.
        ignore_index: label value that marks examples to ignore.

    Returns:
        ``(value, weights)``: the scalar described in :class:`DMLoss` (differentiable, its
        backward is the DM gradient) and the (N,) detached normalised weights w~.
    """
    check_inputs(logits, target)
    out: tuple[Tensor, Tensor] = DMFunction.apply(
        logits, target, edf, normalise, eps, ignore_index
    )
    return out


class DMLoss(nn.Module):
    """Derivative Manipulation loss: ``loss = DMLoss(EDF("dm", lam=0.5, beta=8.0))``.

    ``forward(logits (N, C), target (N,)) -> scalar``. Calling ``.backward()`` on the scalar
    sends exactly the DM gradient (module docstring) to the logits.

    The scalar (float32, or float64 for float64 logits, so that it cannot overflow for
    half-precision logits) is the emphasis-weighted cross-entropy ``sum_i w~_i * (-log p_i)``:
    with derivative normalisation, a weighted average of the per-example CE (same scale as
    CE, for logging); without it, the mean of ``w(p_i) * (-log p_i)``. It is a reading, not
    the objective: DM's gradient is generally not the gradient of any loss of the batch, so
    its backward is defined directly rather than by autograd of this value.

    After each forward, :attr:`last_weights` holds the (N,) normalised weights w~ (detached;
    zero for ignored examples), for diagnostics such as the share of weight on noisy labels.

    Labels must lie in [0, C) or equal ``ignore_index``. On the CPU any other label raises a
    ValueError naming it and C; on a GPU the check is an asynchronous device assert (no
    synchronisation per step), so a bad label surfaces at the next synchronisation as CUDA's
    "device-side assert triggered" error.

    Non-finite logits (docs/method.md, "Labels and non-finite logits"): an example with a NaN
    logit, or +inf on a class other than its label, has no p. It gets zero weight, like an
    ignored example (DN shares the batch's weight among the others), its gradient row is NaN
    and the value is NaN; the other examples' weights and gradient rows are those of the batch
    without it. The NaN is passed on, never dropped: a GradScaler skips the step and the
    trainer stops the trial as diverged. -inf rules a class out and is fine as long as some
    class other than the label stays above it; on the label it means p = 0 (the gradient is
    finite, the value -log p is not). +inf on the label alone means p = 1.

    Emphasis schedules (:class:`~dm_search.edf.schedule.EDFSchedule`): give a schedule instead of
    an EDF and tell the loss how far training is with :meth:`set_progress` (or
    :meth:`set_step`) before each step; :attr:`edf` is then the EDF in force. Forgetting to
    is an error, never a silent fixed EDF.

    With ``guard=True`` the loss watches for a collapsed network, cheaply (one look every
    ``guard_every`` calls, after the first 100): at chance accuracy, logits that no longer
    vary across the batch or that explode, three looks in a row, raise
    :class:`TrainingCollapsed` with what was seen and what to change.

    With ``compile=True`` the forward runs as one compiled kernel (:mod:`dm_search.loss.fused`:
    TorchInductor, C++ on the CPU, Triton on a GPU) with the same gradient. The first call
    for a batch shape compiles it (seconds); after that every EDF, schedule step and trial in
    the process reuses it. A family without the fused form
    (:meth:`~dm_search.edf.base.EDF.coefficients`) stays on the eager path, and so does a call
    inside an outer ``torch.compile``, which traces the eager path itself.

    Args:
        edf: an :class:`~dm_search.edf.base.EDF` or its config dict, or an
            :class:`~dm_search.edf.schedule.EDFSchedule` (or its config: ``edf``, ``edf_end``,
            ``ramp``).
        normalise: "batch" (derivative normalisation, the paper's DN) or "none".
        eps: saturation scale (default 5e-7, from the authors' layer); 0 disables it.
        ignore_index: target value whose examples are ignored (zero weight, zero gradient).
        guard: raise TrainingCollapsed when training has collapsed (see above).
        guard_every: calls between two looks of the guard.
        compile: use the fused, compiled forward (see above).

    Example:
        >>> import torch
        >>> from dm_search import EDF, DMLoss
        >>> loss_fn = DMLoss(EDF("dm", lam=0.5, beta=8.0))
        >>> logits = torch.randn(4, 10, requires_grad=True)
        >>> loss_fn(logits, torch.tensor([1, 2, 3, 4])).backward()
        >>> float(logits.grad.abs().sum()) <= 1.0 + 1e-6
        True
    """

    last_weights: Tensor | None
    edf: EDF
    schedule: EDFSchedule | None

    def __init__(
        self,
        edf: EDF | EDFSchedule | dict[str, Any],
        *,
        normalise: Normalise = "batch",
        eps: float = 5e-7,
        ignore_index: int = -100,
        guard: bool = False,
        guard_every: int = 50,
        compile: bool = False,
    ) -> None:
        super().__init__()
        schedule = None
        if isinstance(edf, dict) and "edf_end" in edf:
            edf = EDFSchedule.from_config(edf)
        if isinstance(edf, EDFSchedule):
            schedule, edf = edf, edf.start
        elif not isinstance(edf, EDF):
            edf = EDF.from_config(edf)
        if normalise not in NORMALISATIONS:
            raise ValueError(
                f"normalise must be one of {', '.join(NORMALISATIONS)}; got {normalise!r}."
            )
        if isinstance(eps, bool) or not isinstance(eps, int | float) or not (
            math.isfinite(eps) and eps >= 0
        ):
            raise ValueError(f"eps must be a finite number >= 0; got {eps!r}.")
        self.edf = edf
        self.schedule = schedule
        self.progress: float | None = None
        self.normalise: Normalise = normalise
        self.eps = float(eps)
        self.ignore_index = int(ignore_index)
        self.last_weights = None
        self.guard = bool(guard)
        self.guard_every = max(int(guard_every), 1)
        self._calls = 0
        self._strikes = 0
        # Not self.compile: nn.Module.compile is a method.
        self.fused = bool(compile)
        # (edf, device, coefficients, eps) of the last fused call, as tensors: rebuilding them
        # every step would cost a third of the kernel at small batches.
        self._fused_args: tuple[Any, ...] | None = None

    # The guard waits this many calls before its first look (a zero-initialised last layer
    # starts with constant outputs) and needs this many bad looks in a row.
    GUARD_AFTER = 100
    GUARD_STRIKES = 3

    def _check_collapse(self, logits: Tensor, target: Tensor) -> None:
        spread, absmax = logit_health(logits)
        keep = target != self.ignore_index
        hits = (logits.detach().argmax(1) == target)[keep].float()
        # One synchronisation every guard_every calls: that is the guard's whole cost.
        acc = float(hits.mean()) if hits.numel() else 0.0
        c = logits.shape[1]
        ce = float(F.cross_entropy(logits.detach().float(), target,
                                   ignore_index=self.ignore_index))
        # Against possibly noisy labels, a robust network's batch accuracy can be low and its
        # cross-entropy high: a generous margin over chance, and twice a uniform guess's loss.
        reason = collapse_signs(acc=acc, chance=1.0 / c + 0.08, spread=float(spread),
                                absmax=float(absmax), loss=ce, num_classes=c, loss_over=2.0)
        self._strikes = self._strikes + 1 if reason else 0
        if reason and self._strikes >= self.GUARD_STRIKES:
            raise TrainingCollapsed(
                f"training has collapsed by step {self._calls}: {reason}, at chance accuracy "
                f"({acc:.1%} of the batch). An EDF is validated with one learning rate: train "
                "with the recipe it was exported with (dm_search.load_recipe(file)), or lower "
                "the learning rate."
            )

    def set_progress(self, progress: float) -> EDF:
        """Move a scheduled loss to ``progress``, the share of the training budget done (0 at
        the first step, 1 at the end; beyond 1 the schedule stays at its end). Returns the EDF
        now in force. Cheap: one interpolation, cached, and no tensor work."""
        if self.schedule is None:
            raise RuntimeError("this DMLoss has a fixed EDF; set_progress is for a loss built "
                               "from an emphasis schedule (an export with a schedule:, or "
                               "DMLoss(EDFSchedule(...)))")
        p = float(progress)
        if not p >= 0.0:  # NaN too
            raise ValueError(f"progress is the share of training done, >= 0; got {progress!r}")
        edf = self.schedule.at(min(p, 1.0))
        self.__dict__["edf"] = edf
        self.__dict__["progress"] = p
        return edf

    def set_step(self, step: int, total_steps: int) -> EDF:
        """:meth:`set_progress` from optimiser steps: ``step`` done of ``total_steps``."""
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1; got {total_steps!r}")
        return self.set_progress(step / total_steps)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if self.schedule is not None and self.progress is None:
            raise RuntimeError(
                f"this DMLoss follows an emphasis schedule ({self.schedule.label()}): tell it "
                "how far training is before each step with loss_fn.set_step(step, "
                "total_steps) or loss_fn.set_progress(fraction)")
        args = self._fused_args
        if self.fused and (args is None or args[0] is not self.edf
                           or args[1] != logits.device or args[5] != self._settings()):
            args = self._fused(logits.device)
        if args is not None and self.fused and args[2] is not None \
                and not torch.compiler.is_compiling():
            check_inputs(logits, target)
            value, w = FusedDMFunction.apply(logits, target, args[2], args[3], args[4],
                                              self.ignore_index)
        else:
            value, w = dm_loss(
                logits,
                target,
                self.edf,
                normalise=self.normalise,
                eps=self.eps,
                ignore_index=self.ignore_index,
            )
        # Plain attribute write: nn.Module.__setattr__ costs more than the rest of a small step.
        self.__dict__["last_weights"] = w
        if self.guard:  # after dm_loss, which has checked the inputs
            self.__dict__["_calls"] = self._calls + 1
            if self._calls >= self.GUARD_AFTER and self._calls % self.guard_every == 0:
                self._check_collapse(logits, target)
        return value

    def _settings(self) -> tuple[float, str]:
        return self.eps, self.normalise

    def _fused(self, device: torch.device) -> tuple[Any, ...]:
        edf = self.edf
        c = edf.coefficients()
        if c is None and not _WARNED.get(edf.family):
            _WARNED[edf.family] = True
            warnings.warn(f"EDF family {edf.family!r} has no fused form (EDF.coefficients); "
                          "DMLoss(compile=True) trains it on the eager path", stacklevel=3)
        coef = None if c is None else torch.tensor(c, dtype=torch.float64, device=device)
        eps = torch.tensor(self.eps, dtype=torch.float64, device=device)
        batch_dn = torch.tensor(self.normalise == "batch", device=device)
        args = (edf, device, coef, eps, batch_dn, self._settings())
        self.__dict__["_fused_args"] = args
        return args

    def extra_repr(self) -> str:
        fused = ", compile=True" if self.fused else ""
        if self.schedule is not None:
            return (f"schedule={self.schedule!r}, progress={self.progress}, "
                    f"normalise={self.normalise!r}, eps={self.eps:g}{fused}")
        return f"edf={self.edf!r}, normalise={self.normalise!r}, eps={self.eps:g}{fused}"
