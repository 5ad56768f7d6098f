"""The loss: DMLoss, which sends each example's gradient with the magnitude its EDF gives.

``dm`` holds DMLoss and its autograd functions; ``fused`` the compiled kernel that computes a
batch's weights and gradient in one pass; ``guard`` the signs of collapsed training;
``references`` the plain losses (MAE, MSE, GCE) that DM reproduces exactly.

Imports torch, ``dm_search.edf`` and ``dm_search.common`` only.
"""

from __future__ import annotations

from dm_search.loss.dm import NORMALISATIONS, DMLoss, dm_loss
from dm_search.loss.guard import TrainingCollapsed, collapse_signs, logit_health
from dm_search.loss.references import GCELoss, MAELoss, MSELoss

__all__ = ["NORMALISATIONS", "DMLoss", "GCELoss", "MAELoss", "MSELoss", "TrainingCollapsed",
           "collapse_signs", "dm_loss", "logit_health"]
