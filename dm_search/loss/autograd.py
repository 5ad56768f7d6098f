"""The autograd functions behind DMLoss: the forward that computes each example's weight and
the gradient DM sends to the logits (saved, then scaled in place by the backward), eager or
through the fused kernel, and the checks of logits and labels."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from dm_search.edf.base import EDF

__all__ = ["DMFunction", "FusedDMFunction", "check_inputs", "check_labels", "dm_forward"]


def check_inputs(logits: Tensor, target: Tensor) -> None:
    if logits.dim() != 2:
        raise ValueError(
            f"DMLoss expects logits of shape (N, C); got shape {tuple(logits.shape)}. "
            "Flatten extra dimensions into N first."
        )
    if logits.shape[1] < 2:
        raise ValueError(f"DMLoss needs at least 2 classes; logits have C={logits.shape[1]}.")
    if not torch.is_floating_point(logits):
        raise ValueError(f"DMLoss expects floating-point logits; got {logits.dtype}.")
    if target.dim() != 1 or target.shape[0] != logits.shape[0]:
        raise ValueError(
            f"DMLoss expects target of shape (N,) = ({logits.shape[0]},); "
            f"got {tuple(target.shape)}."
        )
    if target.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise ValueError(f"DMLoss expects integer class indices as target; got {target.dtype}.")


def check_labels(safe: Tensor, num_classes: int, ignore_index: int) -> None:
    """Labels (ignored ones already replaced by 0) must lie in [0, C): outside it the scatter
    below fails with an index error on the CPU and a bare device-side assert on a GPU."""
    if not safe.numel():
        return
    lo, hi = safe.aminmax()
    if safe.is_cuda:
        # Reading lo and hi back would stall the stream every step; this assert fails at the
        # next synchronisation instead, without one of its own.
        torch._assert_async((lo >= 0) & (hi < num_classes),
                            f"DMLoss: a label lies outside [0, {num_classes - 1}]")
        return
    low, high = int(lo), int(hi)
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"DMLoss got label {low if low < 0 else high}, but the logits have C={num_classes} "
            f"classes: labels must lie in [0, {num_classes - 1}] (or equal "
            f"ignore_index={ignore_index})."
        )


def dm_forward(
    logits: Tensor,
    target: Tensor,
    edf: EDF,
    normalise: str,
    eps: float,
    ignore_index: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Returns (value, per-example weights w~ (N,), gradient w.r.t. logits (N, C)).

    Written as few whole-tensor operations as possible: at small batch sizes the cost is the
    number of kernel launches, at large ones the number of passes over the (N, C) logits.
    """
    z = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
    t = target if target.dtype == torch.int64 else target.long()
    ignored = (t == ignore_index).unsqueeze_(1)
    safe = t.unsqueeze(1).masked_fill(ignored, 0)
    check_labels(safe, z.shape[1], ignore_index)

    # Non-target logits only (target at -inf): their log-partition gives 1 - p without
    # cancellation, and their exponentials are the masked softmax, i.e. the unit-norm
    # direction without dividing by 1 - p. Per-example vectors stay (N, 1) to avoid reshapes.
    e = z.scatter(1, safe, -math.inf)
    top = e.amax(1, keepdim=True)
    e.sub_(top).exp_()
    total = e.sum(1, keepdim=True)  # >= 1: the row maximum contributes exp(0)
    b = total.log().add_(top).sub_(z.gather(1, safe))  # lse(non-target) - z_y
    nll = F.softplus(b)  # -log p
    log_1mp = F.logsigmoid(b)

    # A NaN logit, or +inf on a class other than the label, leaves p undefined (b is NaN).
    # Such an example is weighted like an ignored one: left in, its NaN would void every
    # weight of the batch through DN's softmax. Its gradient row and the value stay NaN.
    skip = ignored | b.isnan()
    log_w = edf.log_weight_from_logs(nll.neg(), log_1mp).masked_fill_(skip, -math.inf)
    if normalise == "batch":
        # An all-ignored batch (or a family overflowing to +inf) gives NaN here: no weight.
        w = torch.softmax(log_w, 0).nan_to_num_(0.0)
    else:
        w = log_w.exp_().div_(skip.numel() - skip.sum()).nan_to_num_(0.0)
        w.clamp_(max=torch.finfo(logits.dtype).max / 4)

    # grad = w s / 2 * (masked softmax - onehot), s = (1 - p) / ((1 - p) + eps)
    half = w * 0.5 if eps == 0.0 else torch.sigmoid(log_1mp - math.log(eps)).mul_(w).mul_(0.5)
    grad = e.div_(total).scatter_(1, safe, -1.0).mul_(half)

    w = w.squeeze(1)
    value = torch.dot(w, nll.squeeze(1))
    return value, w, grad if grad.dtype == logits.dtype else grad.to(logits.dtype)


class _SavedGradFunction(torch.autograd.Function):
    """Both paths: forward computes the gradient with the value; backward only scales it."""

    @staticmethod
    def keep(ctx: Any, grad: Tensor, w: Tensor) -> None:
        _save_grad(ctx, grad)
        ctx.mark_non_differentiable(w)
        ctx.set_materialize_grads(False)  # no zero-filled gradient for the weights output

    @staticmethod
    def backward(
        ctx: Any, grad_value: Tensor, grad_w: Tensor
    ) -> tuple[Tensor | None, ...]:
        return _backward_grad(ctx, grad_value), None, None, None, None, None


class DMFunction(_SavedGradFunction):
    @staticmethod
    def forward(
        ctx: Any,
        logits: Tensor,
        target: Tensor,
        edf: EDF,
        normalise: str,
        eps: float,
        ignore_index: int,
    ) -> tuple[Tensor, Tensor]:
        value, w, grad = dm_forward(logits, target, edf, normalise, eps, ignore_index)
        _SavedGradFunction.keep(ctx, grad, w)
        return value, w


def _save_grad(ctx: Any, grad: Tensor) -> None:
    # On ctx rather than save_for_backward (allowed for an intermediate), so that backward can
    # drop the only other reference and autograd adopts the tensor as .grad without a copy.
    ctx.grad = grad


def _backward_grad(ctx: Any, grad_value: Tensor) -> Tensor:
    """The saved gradient times the incoming one, without a copy of the (N, C) gradient
    where it can be avoided: one backward (no retain_graph) scales it in place, and a
    plain ``loss.backward()`` (grad_value exactly 1 on the CPU) returns it as it is."""
    grad: Tensor | None = ctx.grad
    if grad is None:
        raise RuntimeError("DMLoss: backward through this graph a second time needs "
                           "retain_graph=True on the first backward")
    if grad_value.dtype != grad.dtype:
        grad_value = grad_value.to(grad.dtype)
    if grad_value.requires_grad or torch._C._autograd._get_current_graph_task_keep_graph():
        return grad * grad_value
    ctx.grad = None
    if not grad_value.is_cuda and grad_value.numel() == 1 and float(grad_value) == 1.0:
        return grad
    return grad.mul_(grad_value)


class FusedDMFunction(_SavedGradFunction):
    """The fused path (dm_search.loss.fused): one compiled kernel gives the value, the weights and
    the gradient; backward only scales the saved gradient, as in DMFunction."""

    @staticmethod
    def forward(
        ctx: Any,
        logits: Tensor,
        target: Tensor,
        coef: Tensor,
        eps: Tensor,
        batch_dn: Tensor,
        ignore_index: int,
    ) -> tuple[Tensor, Tensor]:
        from dm_search.loss.fused import fused_forward

        value, w, grad, bad = fused_forward(logits, target, coef, eps, batch_dn,
                                            ignore_index=ignore_index)
        if bad.is_cuda:
            torch._assert_async(~bad, f"DMLoss: a label lies outside [0, {logits.shape[1] - 1}]")
        elif bool(bad):  # the eager check names the label
            check_labels(target.masked_fill(target == ignore_index, 0).long().unsqueeze(1),
                          logits.shape[1], ignore_index)
        _SavedGradFunction.keep(ctx, grad, w)
        return value, w
