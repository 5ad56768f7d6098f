"""The plain autograd losses of p (MAE, MSE, GCE) that DM reproduces with the matching EDF, no
derivative normalisation and eps=0: the references the tests check DMLoss against."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["GCELoss", "MAELoss", "MSELoss"]


def _log_p(logits: Tensor, target: Tensor) -> Tensor:
    return F.log_softmax(logits, dim=1).gather(1, target.long().unsqueeze(1)).squeeze(1)


class MAELoss(nn.Module):
    """Mean absolute error between softmax and one-hot, as a function of p: mean(1 - p)."""

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return (1.0 - _log_p(logits, target).exp()).mean()


class MSELoss(nn.Module):
    """mean((1 - p)^2): the squared error on the target probability only."""

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return (1.0 - _log_p(logits, target).exp()).pow(2).mean()


class GCELoss(nn.Module):
    """Generalised cross-entropy, mean((1 - p^q) / q), q in (0, 1]."""

    def __init__(self, q: float = 0.7) -> None:
        super().__init__()
        if not 0.0 < q <= 1.0:
            raise ValueError(f"GCE q must be in (0, 1]; got {q!r}.")
        self.q = q

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return ((1.0 - (self.q * _log_p(logits, target)).exp()) / self.q).mean()
