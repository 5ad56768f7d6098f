"""A training loop of your own: what it receives (:class:`TrialContext`) and how its reports
become the trial's record.

The loop is a function ``train(trial)``; dm-search calls it once per trial, reference, race
run and final-stage run, each time with a context that holds that run's EDF as a loss, its
recipe, its data and its seed. The loop reports each epoch with ``trial.report(epoch=...,
val_acc=...)``; the study ranks, stops early and races on those reports exactly as it does
for the built-in loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dm_search.loss import DMLoss
from dm_search.training.config import TrialConfig
from dm_search.training.data import PreparedData, prepare_data
from dm_search.training.helpers import (
    NAN,
    TrialDiverged,
    get_trainer,
    resolve_device,
    threads_for,
)
from dm_search.training.models import create_model
from dm_search.training.recipe import Recipe

__all__ = ["ReportError", "TrialContext", "TrialStopped", "UserRun", "run_user_trainer"]

Report = Callable[[dict[str, float]], None]

# Names a report may not use: measured here (epoch_s, mode, spread), or what the worker and
# Ray Tune add to every result (a metric called "error" would mark each epoch a failure).
RESERVED = frozenset({
    "epoch_s", "mode", "spread", "error", "done", "total_epochs", "node_ip", "node_id",
    "node_hardware", "fingerprint", "noise_rate", "trial_id", "training_iteration",
    "time_this_iter_s", "time_total_s", "timestamp", "config", "date", "hostname", "pid",
})


class TrialStopped(BaseException):
    """Raised by ``trial.report`` when the study stopped the trial early (its rule found it
    behind the others). A BaseException, so that a loop's ``except Exception`` lets it
    through; the loop needs no code for it. ``trial.should_stop`` says the same."""


class ReportError(ValueError):
    """A report the study cannot record (epochs out of order, an accuracy outside [0, 1])."""


@dataclass
class TrialContext:
    """What a training loop of your own gets for one run.

    Attributes:
        loss: the run's EDF as a DMLoss (``loss(logits, labels)``). Under an emphasis schedule
            it moves at each report (call ``loss.set_step(step, total)`` to move it per step).
        recipe: optimiser, lr, schedule and batch size the run trains with
            (``recipe.optimizer(params)``, ``recipe.scheduler(opt, total_steps)``).
        epochs: how many epochs to train (report each of them, numbered from 1).
        seed: this run's training seed (already applied to torch, numpy and random).
        params: your own hyperparameters (the config's ``params:``, searched ones included).
        config: the whole trial config.
        data: the spec's dataset with its label noise and clean validation split, or None when
            the config has no ``data:``. In the final stage it is the full training set, with
            empty validation tensors.
        device: where to train (``device:`` in the config; cuda when available).
        final: True in the final stage: train on the full training set; report test_acc
            (val_acc may be left out).
        checkpoint_dir: a folder of this run's own, for checkpoints.
    """

    loss: DMLoss
    recipe: Recipe
    epochs: int
    seed: int
    params: dict[str, Any]
    config: TrialConfig
    data: PreparedData | None
    device: torch.device
    final: bool
    checkpoint_dir: Path
    _sink: Report | None = field(default=None, repr=False)
    _history: list[dict[str, float]] = field(default_factory=list, repr=False)
    _last_time: float = field(default_factory=time.perf_counter, repr=False)
    _stopped: bool = field(default=False, repr=False)

    @property
    def should_stop(self) -> bool:
        """True once the study has stopped this trial: the report that learned it raised
        TrialStopped, and every later report raises it again."""
        return self._stopped

    @property
    def history(self) -> list[dict[str, float]]:
        """The epochs reported so far."""
        return list(self._history)

    def model(self, **options: Any) -> torch.nn.Module:
        """The config's ``model:`` (built-in or your own factory) for ``data``'s inputs, on the
        device, initialised from the run's seed; ``options`` override ``model.options``."""
        if self.data is None:
            raise ValueError("trial.model() builds the model for trial.data's inputs; this "
                             "config has no data: section, so build your network yourself")
        opts = {**self.config.model.options, **options}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            net = create_model(self.config.model.name, self.data.input_shape,
                               self.data.num_classes, **opts)
        return net.to(self.device)

    def report(self, epoch: int | None = None, val_acc: float | None = None,
               **metrics: float) -> None:
        """Record one finished epoch: its number (default: the next one), its accuracy on the
        clean validation split (what the study ranks on), and any other metrics (test_acc,
        train_loss, ...: numbers). Raises TrialStopped when the study stops the trial, and
        ReportError for a report it cannot record."""
        if self._stopped:
            raise TrialStopped
        previous = int(self._history[-1]["epoch"]) if self._history else 0
        epoch = previous + 1 if epoch is None else epoch
        if not isinstance(epoch, int | np.integer) or isinstance(epoch, bool):
            raise ReportError(f"trial.report: epoch must be a whole number; got {epoch!r}")
        if epoch < 1:
            raise ReportError(f"trial.report: epochs are numbered from 1; got {epoch}")
        if epoch <= previous:
            raise ReportError(f"trial.report: epoch {epoch} reported after epoch {previous}: "
                              "report each epoch once, in order, numbered from 1")
        if epoch > self.epochs:
            raise ReportError(f"trial.report: epoch {epoch} is past the run's {self.epochs} "
                              "epochs (trial.epochs)")
        row = {"epoch": float(epoch), "val_acc": self._accuracy("val_acc", val_acc)}
        for key, value in metrics.items():
            if key in RESERVED:
                raise ReportError(f"trial.report: {key!r} is a name the study uses itself; "
                                  "report it under another name")
            try:
                row[key] = float(value)
            except (TypeError, ValueError):
                raise ReportError(f"trial.report: {key} must be a number; got "
                                  f"{value!r}") from None
        if "test_acc" in metrics:
            row["test_acc"] = self._accuracy("test_acc", metrics["test_acc"], needed=False)
        if "train_loss" in row and not math.isfinite(row["train_loss"]):
            raise TrialDiverged(epoch, f"training loss is {row['train_loss']}")
        now = time.perf_counter()
        edf = self.loss.edf
        row.update(epoch_s=now - self._last_time,
                   mode=NAN if edf.mode is None else edf.mode,
                   spread=NAN if edf.spread is None else edf.spread)
        self._last_time = now
        self._history.append(row)
        if self.loss.schedule is not None:
            self.loss.set_step(epoch, self.epochs)  # the EDF for the next epoch
        if self._sink is not None:
            try:
                self._sink(dict(row))
            except TrialStopped:
                self._stopped = True
                raise

    def _accuracy(self, key: str, value: Any, needed: bool | None = None) -> float:
        needed = not self.final if needed is None else needed
        if value is None:
            if needed:
                raise ReportError(f"trial.report: {key} is missing; give the epoch's accuracy "
                                  "on the clean validation split (trial.data.x_val, y_val): "
                                  "the study ranks trials on it")
            return NAN
        try:
            acc = float(value)
        except (TypeError, ValueError):
            raise ReportError(f"trial.report: {key} must be a number; got {value!r}") from None
        if math.isnan(acc) and not needed:
            return NAN
        if not math.isfinite(acc):
            raise ReportError(f"trial.report: {key} is {acc!r}; during the search it must be "
                              "a finite accuracy (an empty validation split? a NaN model?)")
        if not 0.0 <= acc <= 1.0:
            raise ReportError(f"trial.report: {key} is {acc!r}; an accuracy is a fraction in "
                              "[0, 1] (e.g. 0.87, not 87)")
        return acc


@dataclass
class UserRun:
    """What a loop of your own left behind: its reports and the run's set-up."""

    history: list[dict[str, float]]
    data: PreparedData | None
    device: torch.device


def run_user_trainer(cfg: TrialConfig, report: Report | None = None, *,
                     data: PreparedData | None = None, final: bool = False,
                     checkpoint_dir: str | Path | None = None) -> UserRun:
    """Call ``cfg.trainer`` with this run's TrialContext; its reports go to ``report``."""
    assert cfg.trainer is not None
    train = get_trainer(cfg.trainer)
    device = resolve_device(cfg.device)
    torch.set_num_threads(threads_for(cfg))
    if data is None and cfg.data is not None:
        data = prepare_data(cfg.data)
    given = checkpoint_dir or cfg.checkpoint.dir
    # Without a folder of its own (a race or final-stage run), a temporary one, removed after.
    scratch = None if given else tempfile.TemporaryDirectory(prefix="dm-trial-")
    folder = Path(given or scratch.name)  # type: ignore[union-attr]
    folder.mkdir(parents=True, exist_ok=True)
    try:
        history = _call(train, cfg, report, data, final, device, folder)
    finally:
        if scratch is not None:
            scratch.cleanup()
    return UserRun(history, data, device)


def _call(train: Callable[..., Any], cfg: TrialConfig, report: Report | None,
          data: PreparedData | None, final: bool, device: torch.device,
          folder: Path) -> list[dict[str, float]]:
    """``train(trial)`` with the run's context; the epochs it reported."""
    epochs = cfg.optim.epoch_budget
    assert epochs is not None, "a config with a trainer gives optim.epochs (validated)"
    loss = DMLoss(cfg.loss.build_schedule() or cfg.loss.build_edf(),
                  normalise=cfg.loss.normalise, eps=cfg.loss.eps)
    if loss.schedule is not None:
        loss.set_step(0, epochs)
    # The whole process's generators: the loop draws from them (initialisation, dropout,
    # its own shuffling), and a run must be repeatable from its seed.
    random.seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    torch.manual_seed(cfg.seed)
    # A copy of the data's record per run: a worker reuses its data for the next trial, and a
    # loop that rebinds a field (d.x_train = ...) must not change what that trial gets.
    trial = TrialContext(loss=loss, recipe=Recipe.from_config(cfg.optim, epochs), epochs=epochs,
                         seed=cfg.seed, params=dict(cfg.params or {}), config=cfg,
                         data=None if data is None else dataclasses.replace(data),
                         device=device, final=final, checkpoint_dir=folder, _sink=report)
    with contextlib.suppress(TrialStopped):  # stopped by the study: what it reported stands
        train(trial)
    if not trial.history:
        raise ReportError(f"trainer {cfg.trainer!r} returned without reporting an epoch: call "
                          "trial.report(epoch=..., val_acc=...) after each epoch")
    return trial.history
