"""dm-search: find the example weighting (EDF) that trains the most robust classifier.

Public API:
    EDF: emphasis density functions (weight as a function of p), by family name.
    EDFSchedule: an EDF that moves from one member of its family to another over training.
    DMLoss: the Derivative Manipulation loss for any PyTorch classifier.
    load_loss: a DMLoss from the EDF file that `dm-search export` writes.
    load_recipe: the optimiser and schedule that EDF was validated with.
    TrainingCollapsed: what DMLoss(..., guard=True) raises when training has collapsed.
    search: run a study from Python, with a training loop of your own (returns SearchResult).
    TrialContext: what that loop receives for each run (loss, recipe, data, report ...).
    TrialStopped: what trial.report raises when the study stops the trial early.

The names load on first use, so that importing a light submodule (the command line's
--help, list and status) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dm_search._version import __version__

if TYPE_CHECKING:
    from dm_search.api import SearchResult, search
    from dm_search.edf import EDF, EDFSchedule
    from dm_search.loss import DMLoss, TrainingCollapsed, dm_loss
    from dm_search.training.context import TrialContext, TrialStopped
    from dm_search.training.exported import load_loss, load_recipe

__all__ = ["EDF", "DMLoss", "EDFSchedule", "SearchResult", "TrainingCollapsed", "TrialContext",
           "TrialStopped", "__version__", "dm_loss", "load_loss", "load_recipe", "search"]

_LAZY = {"EDF": "dm_search.edf", "EDFSchedule": "dm_search.edf",
         "DMLoss": "dm_search.loss", "dm_loss": "dm_search.loss",
         "TrainingCollapsed": "dm_search.loss", "load_loss": "dm_search.training.exported",
         "load_recipe": "dm_search.training.exported", "search": "dm_search.api",
         "SearchResult": "dm_search.api", "TrialContext": "dm_search.training.context",
         "TrialStopped": "dm_search.training.context"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dm_search' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
