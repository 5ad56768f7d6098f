"""What a trial's value is called, and how recorded documents (trial configs, study specs,
checkpoints) are compared across versions of dm-search. Imports nothing heavy: the light
commands compare specs too."""

from __future__ import annotations

from typing import Any

__all__ = ["METRIC", "without_unset"]

# What a trial's value is, wherever it is recorded, reported or ranked: the clean validation
# accuracy of its last epoch.
METRIC = "val_acc"


def without_unset(data: Any) -> Any:
    """``data`` with every mapping entry whose value is None left out, at any depth: how two
    configs or specs are compared when one was recorded before a field (default None) existed,
    so that adding an optional field never makes an old study, checkpoint or trial differ."""
    if isinstance(data, dict):
        return {k: without_unset(v) for k, v in data.items() if v is not None}
    if isinstance(data, list):
        return [without_unset(v) for v in data]
    return data
