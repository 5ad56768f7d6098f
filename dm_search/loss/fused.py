"""The fused DM loss: the whole forward of :func:`dm_search.loss.dm_loss` as one compiled
kernel.

``DMLoss(edf, compile=True)`` sends its forward here. The eager forward is about 30 small
whole-tensor operations; at small batches their dispatch costs more than the arithmetic, so
TorchInductor compiles them into one loop nest (C++ on the CPU, Triton on a GPU).

Three choices keep the compiled kernel cheap to reuse:

- **One kernel for every EDF.** Every built-in family's log-weight is a case of one form
  (:meth:`dm_search.edf.base.EDF.coefficients`)::

      log w = c + a log p + b log(1-p) + k exp(m log p + n log(1-p)) + r p + s p^2

  and the eight coefficients, like ``eps`` and the choice of normalisation, are tensor
  inputs of the kernel, not constants baked into it. A schedule that changes its EDF every
  step, a new trial with another family or another ``eps``: all reuse the kernel compiled
  for the first. Compiling is once per process, shape and dtype, never per EDF or trial.
- **Static shapes, compiled by the shape.** A kernel is traced for one (N, C), so the last
  short batch of an epoch gets its own kernel once and then reuses it every epoch. After
  :data:`MAX_SHAPES` batch sizes for one C, further sizes are padded with ignored examples
  up to the next power of two (an ignored example has no weight and no gradient, so the
  result is unchanged) and the number of kernels stays bounded.
- **No per-call tracing.** The kernel is compiled from a traced graph with
  ``torch._inductor.compile`` and called directly from a dict keyed by shape, dtype and
  device: a ``torch.compile``'d function pays about 25 us of guard checks per call on a
  small CPU, as much as the whole cross-entropy at 256 x 10.

The gradient contract is the eager path's: the tests of DMLoss run on both.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["MAX_SHAPES", "NCOEF", "compiled_kernels", "fused_forward", "log_weight"]

NCOEF = 8  # c, a, b, k, m, n, r, s
MAX_SHAPES = 8  # batch sizes compiled exactly for one (C, dtype, device); then padding
# Up to this many classes the target is masked by comparing column indices, in the same loops
# as the arithmetic; above it, by a scatter into a copy. The scatter was clearly faster at
# C = 1000; at C = 100 runs disagreed, so small C keeps the simpler compare.
MASK_BELOW = 256

_Kernel = Callable[..., list[Tensor]]
_KERNELS: dict[tuple[Any, ...], _Kernel] = {}
_SIZES: dict[tuple[Any, ...], set[int]] = {}
_LOCK = threading.Lock()


def _term(coef: Tensor, x: Tensor) -> Tensor:
    # A zero coefficient contributes exactly nothing, also where x is -inf (p = 0 or 1):
    # 0 * -inf would be NaN and void the whole batch through DN's softmax.
    return torch.where(coef == 0, 0.0, coef * x)


def log_weight(log_p: Tensor, log_1mp: Tensor, coef: Tensor) -> Tensor:
    """log w from log p, log(1 - p) and the eight coefficients of the canonical form."""
    c, a, b, k, m, n, r, s = coef.unbind()
    p = log_p.exp()
    bump = torch.exp(_term(m, log_p) + _term(n, log_1mp))
    return (c + _term(a, log_p) + _term(b, log_1mp) + _term(k, bump)
            + _term(r, p) + _term(s, p * p))


def _forward(z: Tensor, t: Tensor, coef: Tensor, eps: Tensor, batch_dn: Tensor, *,
             ignore_index: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(value, weights (N,), gradient (N, C), any label outside [0, C)): the eager forward's
    arithmetic (loss.dm_forward) in one graph. A label outside [0, C) is replaced by 0 before
    it indexes anything (never an out-of-bounds access in the kernel) and reported instead.

    The target is masked by comparing column indices up to :data:`MASK_BELOW` classes, and by
    a scatter into a copy of the logits above: the compare on every element made the row
    passes about twice as slow at C = 1000."""
    zc = z if z.dtype in (torch.float32, torch.float64) else z.float()
    n_classes = zc.shape[1]
    t = t.long().unsqueeze(1)
    ignored = t == ignore_index
    bad = ~ignored & ((t < 0) | (t >= n_classes))
    safe = torch.where(ignored | bad, 0, t)

    if n_classes > MASK_BELOW:
        others = zc.scatter(1, safe, -math.inf)
        z_y = zc.gather(1, safe)
    else:
        is_y = torch.arange(n_classes, device=z.device).unsqueeze(0) == safe
        others = torch.where(is_y, -math.inf, zc)
        z_y = torch.where(is_y, zc, 0.0).sum(1, keepdim=True)
    top = others.amax(1, keepdim=True)
    total = torch.exp(others - top).sum(1, keepdim=True)
    b = total.log() + top - z_y
    nll = F.softplus(b)
    log_1mp = F.logsigmoid(b)

    skip = ignored | bad | b.isnan()
    log_w = log_weight(-nll, log_1mp, coef.to(zc.dtype)).masked_fill(skip, -math.inf)
    # Both normalisations are a few operations on (N, 1): computing both and choosing keeps
    # one kernel for either.
    w = torch.where(batch_dn, torch.softmax(log_w, 0).nan_to_num(0.0),
                    (log_w.exp() / (skip.numel() - skip.sum())).nan_to_num(0.0)
                    .clamp(max=torch.finfo(z.dtype).max / 4))
    eps = eps.to(zc.dtype)
    saturation = torch.where(eps == 0, 1.0, torch.sigmoid(log_1mp - eps.log()))
    # The masked softmax again, not a stored one: at large C one more exp per element costs
    # less than writing and re-reading an (N, C) buffer.
    lse = top + total.log()
    if n_classes > MASK_BELOW:
        grad = torch.exp(others - lse).scatter(1, safe, -1.0)
    else:
        grad = torch.where(is_y, -1.0, torch.exp(others - lse))
    grad = grad * (w * saturation * 0.5)
    w = w.squeeze(1)
    value = (w * nll.squeeze(1)).sum()
    return value, w, grad.to(z.dtype), bad.any()


def _compile(n: int, c: int, dtype: torch.dtype, device: torch.device,
             ignore_index: int) -> _Kernel:
    from torch.fx.experimental.proxy_tensor import make_fx

    def graph(z: Tensor, t: Tensor, coef: Tensor, eps: Tensor,
              batch_dn: Tensor) -> tuple[Tensor, ...]:
        return _forward(z, t, coef, eps, batch_dn, ignore_index=ignore_index)

    example: list[Any] = [torch.zeros(n, c, dtype=dtype, device=device),
               torch.zeros(n, dtype=torch.int64, device=device),
               torch.zeros(NCOEF, dtype=torch.float64, device=device),
               torch.zeros((), dtype=torch.float64, device=device),
               torch.zeros((), dtype=torch.bool, device=device)]
    with torch.no_grad():
        gm = make_fx(graph, tracing_mode="fake")(*example)
        kernel: _Kernel = torch._inductor.compile(gm, example)
    return kernel


def _bucket(key: tuple[Any, ...], n: int) -> int:
    """The batch size to run ``n`` examples at: ``n`` itself while few sizes have been
    compiled for this key, else the next power of two (at least n)."""
    sizes = _SIZES.setdefault(key, set())
    if n in sizes or len(sizes) < MAX_SHAPES:
        sizes.add(n)
        return n
    padded = 1 << max(n - 1, 0).bit_length()
    sizes.add(padded)
    return padded


def fused_forward(logits: Tensor, target: Tensor, coef: Tensor, eps: Tensor,
                  batch_dn: Tensor, *, ignore_index: int
                  ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Run the compiled kernel: (value, weights, gradient, any bad label), as
    :func:`_forward`; ``coef`` (8,) and ``eps`` float64, ``batch_dn`` a bool (derivative
    normalisation or w / B), all on the logits' device. Compiles on the first call for a
    shape (seconds), then reuses."""
    n, c = logits.shape
    if target.dtype != torch.int64:  # one kernel for every integer label type
        target = target.long()
    base = (c, logits.dtype, logits.device, ignore_index)
    size = n
    kernel = _KERNELS.get((n, *base))  # the every-step path: one dict look-up, no lock
    if kernel is None:
        with _LOCK:
            size = _bucket(base, n)
            key = (size, *base)
            kernel = _KERNELS.get(key)
            if kernel is None:
                kernel = _KERNELS[key] = _compile(size, c, logits.dtype, logits.device,
                                                  ignore_index)
    if size != n:
        logits = torch.cat([logits, logits.new_zeros(size - n, c)])
        target = torch.cat([target, target.new_full((size - n,), ignore_index)])
    value, w, grad, bad = kernel(logits.detach(), target, coef, eps, batch_dn)
    if size != n:
        w, grad = w[:n], grad[:n]
    return value, w, grad, bad


def compiled_kernels() -> int:
    """How many kernels this process has compiled (one per shape, dtype and device)."""
    return len(_KERNELS)
