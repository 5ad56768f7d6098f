"""One trial: train one network with one EDF and measure why it works. No Ray, no Optuna.

``run_trial(cfg, report)`` follows the paper's protocol (docs/method.md, "The protocol"): the
model trains on the (noisy) training split, is selected on the clean validation split, and is
measured on the untouched test set. After every epoch ``report(metrics)`` receives:

==================== ======================================================================
epoch                1-based epoch just finished
train_loss           mean cross-entropy against the labels training saw (noisy)
dm_loss              mean of DMLoss's value (the emphasis-weighted cross-entropy)
val_acc              accuracy on the clean validation split: the search objective
test_acc             accuracy on the test set
intact_acc           accuracy on training examples whose label is intact
memorised            fraction of corrupted training examples predicted as their WRONG label
p_clean / p_noisy    mean p (probability of the given label) on intact / corrupted examples
noisy_weight_share   share of the DM weight that went to corrupted examples this epoch
weight_var           variance of the normalised weights within a batch, averaged over batches
mode / spread        the EDF's emphasis mode and spread at the end of the epoch (they move
                     during training under an emphasis schedule, loss.edf_end; NaN where the
                     family has none)
lr                   learning rate at the end of the epoch
epoch_s              wall time of the epoch (training and evaluation)
samples_per_s        training examples per second (training phase only)
==================== ======================================================================
Metrics that do not apply (no corrupted examples, no validation split) are NaN.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dm_search._version import __version__
from dm_search.training.config import TrialConfig
from dm_search.training.context import UserRun, run_user_trainer
from dm_search.training.data import PreparedData
from dm_search.training.epoch import (
    Run,
    check_alive,
    evaluate,
    restore,
    save_state,
    set_up,
    train_epoch,
)
from dm_search.training.helpers import (
    NAN,
    TrialCollapsed,
    TrialDiverged,
    augment,
    budget,
    check_config,
    total_epochs,
)

__all__ = ["METRICS", "TrialCollapsed", "TrialDiverged", "TrialResult", "augment", "budget",
           "check_config", "run_trial", "total_epochs"]

METRICS = (
    "epoch", "train_loss", "dm_loss", "val_acc", "test_acc", "intact_acc", "memorised",
    "p_clean", "p_noisy", "noisy_weight_share", "weight_var", "mode", "spread", "lr", "epoch_s",
    "samples_per_s",
)  # fmt: skip

Report = Callable[[dict[str, float]], None]


@dataclass
class TrialResult:
    """What a finished trial hands back (JSON-safe through :meth:`to_dict`)."""

    config: dict[str, Any]
    history: list[dict[str, float]]
    epochs_completed: int
    best_epoch: int
    best_val_acc: float
    test_acc_at_best: float
    final: dict[str, float]
    noise_rate: float
    num_train: int
    num_params: int
    fingerprint: str
    device: str
    wall_s: float
    version: str = __version__
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_trial(
    cfg: TrialConfig,
    report: Report | None = None,
    *,
    data: PreparedData | None = None,
    final: bool = False,
    checkpoint_dir: str | Path | None = None,
) -> TrialResult:
    """Train and evaluate one configuration, calling ``report(metrics)`` after every epoch.
    With ``cfg.trainer``, the training loop is the user's own (``context``).

    Args:
        cfg: the validated trial configuration.
        report: called once per epoch with the metrics listed in the module docstring.
        data: already prepared data (saves loading it again for several trials in one process).
        final: a final-stage run (a loop of one's own is told, through ``trial.final``).
        checkpoint_dir: a loop of one's own's checkpoint folder (default: checkpoint.dir, else
            a new temporary folder).

    Returns:
        The :class:`TrialResult`, with the whole per-epoch history.

    Raises:
        TrialDiverged: the training loss became NaN or infinite.

    Example:
        >>> from dm_search.training.config import load_trial_config
        >>> cfg = load_trial_config("examples/mnist1d_dm.yaml", ["optim.epochs=2"])
        >>> result = run_trial(cfg, report=print)  # doctest: +SKIP
    """
    t_start = time.perf_counter()
    if cfg.trainer is not None:
        # What a loop of one's own leaves out is NaN, as the built-in loop's inapplicable ones.
        full = None if report is None else (
            lambda m: report({**dict.fromkeys(METRICS, NAN), **m}))
        user = run_user_trainer(cfg, full, data=data, final=final,
                                checkpoint_dir=checkpoint_dir)
        return _user_result(cfg, user, time.perf_counter() - t_start)
    run = set_up(cfg, data)
    restore(run)
    dead: list[str] = []
    for epoch in range(run.start_epoch, run.epochs):
        t0 = time.perf_counter()
        train = train_epoch(run, epoch)
        metrics: dict[str, float] = {"epoch": epoch + 1, **train, **evaluate(run)}
        metrics["epoch_s"] = time.perf_counter() - t0
        check_alive(run, metrics, dead)
        metrics = {k: metrics[k] for k in METRICS}  # the documented order
        run.history.append(metrics)
        save_state(run, epoch)
        if report is not None:
            report(dict(metrics))
    return _result(run, time.perf_counter() - t_start)


def _result(run: Run, wall_s: float) -> TrialResult:
    history = run.history
    assert history, "epochs >= 1 always runs or resumes at least one epoch"
    has_val = len(run.data.y_val) > 0
    key = "val_acc" if has_val else "test_acc"
    best = max(history, key=lambda m: (m[key], -m["epoch"]))
    return TrialResult(
        config=run.cfg_dict,
        history=history,
        epochs_completed=len(history),
        best_epoch=int(best["epoch"]),
        best_val_acc=best["val_acc"] if has_val else NAN,
        test_acc_at_best=best["test_acc"],
        final=dict(history[-1]),
        noise_rate=run.data.noise_rate,
        num_train=len(run.data.y_train),
        num_params=sum(p.numel() for p in run.model.parameters()),
        fingerprint=run.data.fingerprint,
        device=str(run.device),
        wall_s=wall_s,
    )


def _user_result(cfg: TrialConfig, user: UserRun, wall_s: float) -> TrialResult:
    """A loop of one's own's reports as the built-in loop's result: metrics it did not report
    are NaN, the best epoch is the best validation accuracy (test accuracy without one)."""
    history = [{**dict.fromkeys(METRICS, NAN), **m} for m in user.history]
    has_val = any(math.isfinite(m["val_acc"]) for m in history)
    key = "val_acc" if has_val else "test_acc"
    best = max(history, key=lambda m: (_finite(m[key]), -m["epoch"]))
    data = user.data
    return TrialResult(
        config=cfg.to_dict(), history=history, epochs_completed=len(history),
        best_epoch=int(best["epoch"]), best_val_acc=best["val_acc"] if has_val else NAN,
        test_acc_at_best=best["test_acc"], final=dict(history[-1]),
        noise_rate=data.noise_rate if data is not None else NAN,
        num_train=len(data.y_train) if data is not None else 0, num_params=0,
        fingerprint=data.fingerprint if data is not None else "", device=str(user.device),
        wall_s=wall_s)


def _finite(x: float) -> float:
    return x if math.isfinite(x) else -math.inf
