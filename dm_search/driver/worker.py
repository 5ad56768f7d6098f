"""What runs inside a Ray worker: a study's trials and its final-stage runs.

Kept apart from the driver (``runner``) so that a worker imports only the trainer, its data and
``ray.tune``: neither Optuna nor the dashboard's plotting, which a worker never uses.
"""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path
from typing import Any

import ray
from ray import tune

from dm_search.common import plugins
from dm_search.common.provenance import hardware
from dm_search.common.records import METRIC
from dm_search.training.config import TrialConfig
from dm_search.training.context import ReportError, TrialStopped
from dm_search.training.data import PreparedData, prepare_data
from dm_search.training.trainer import TrialDiverged, run_trial, total_epochs

_DATA_CACHE: dict[str, PreparedData] = {}


def _prepared(cfg: TrialConfig) -> PreparedData | None:
    # Reused actors keep their data: a study's trials usually share one dataset and split.
    if cfg.data is None:
        return None  # a trainer of one's own that loads its own
    key = json.dumps(cfg.data.model_dump(mode="json"), sort_keys=True)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = prepare_data(cfg.data)
    return _DATA_CACHE[key]


# Tune holds a function trial at every report until the driver has handled the result (its
# Optuna writes, the scheduler, the callbacks: 20-50 ms), so a 30-epoch trial of 0.1-s epochs
# spent a third of a second per trial waiting. While epochs are short, the trial reports from
# a second thread and trains on; a trial the scheduler stops has then trained at most one epoch
# too many, which is why long epochs (a GPU run's) keep the plain lockstep.
PIPELINE_MAX_EPOCH_S = 2.0


def provide(provided: dict[str, Any] | None) -> None:
    """Functions the driver handed over as objects (a trainer defined in the script or notebook
    that runs the study), under the references the trial configs name them by."""
    for ref, fn in (provided or {}).items():
        plugins.provide(ref, fn)


def handed_over() -> tuple[dict[str, Any], ...]:
    """The extra argument of the worker's functions: the functions this driver was handed as
    objects, or nothing (the usual case: references that workers import themselves)."""
    given = plugins.provided()
    return (given,) if given else ()


def trainable(config: dict[str, Any], provided: dict[str, Any] | None = None) -> None:
    """One Ray Tune trial: train ``config["trial_config"]``, reporting every epoch."""
    if config.get("duplicate_of") is not None:
        return  # the same configuration was trained already: its result is on record
    provide(provided)
    cfg = TrialConfig.from_dict(config["trial_config"])
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    if cfg.threads is None:
        cfg = cfg.model_copy(update={"threads": max(1, int(cpus))})
    data = _prepared(cfg)
    epochs = cfg.optim.epoch_budget if data is None else total_epochs(cfg, len(data.y_train))
    extra = {
        "total_epochs": epochs,
        "node_ip": ray.util.get_node_ip_address(),
        "node_id": ray.get_runtime_context().get_node_id(),
        # A JSON string: Tune would flatten a dict into one metric per key.
        "node_hardware": json.dumps(hardware(gpu=cfg.device != "cpu")),
        "fingerprint": data.fingerprint if data is not None else "",
        "noise_rate": data.noise_rate if data is not None else math.nan,
    }
    # A loop of one's own keeps its checkpoints beside the trial's other files.
    folder = (Path(tune.get_context().get_trial_dir() or ".") / "checkpoint"
              if cfg.trainer is not None else None)
    last: dict[str, float] = {}
    pipe = _Pipe()

    def report(metrics: dict[str, float]) -> None:  # in the training thread
        last.update(metrics)
        # reported_at: the driver measures how far its recording runs behind the trials.
        pipe.put({**metrics, **extra, "reported_at": time.time()},
                 wait=metrics["epoch_s"] >= PIPELINE_MAX_EPOCH_S)

    def train() -> None:
        try:
            run_trial(cfg, report=report, data=data, checkpoint_dir=folder)
        except TrialStopped:
            pass
        except BaseException as err:  # handed to the trial's own thread
            pipe.put(err, wait=False)
        finally:
            pipe.put(_Pipe.END, wait=False)

    thread = threading.Thread(target=train, name="dm-search-trial", daemon=True)
    thread.start()
    try:
        while (item := pipe.get()) is not _Pipe.END:
            if isinstance(item, BaseException):
                # The driver can only write a trial's attributes while it is still running,
                # so the reason travels in one last report before the error marks the trial
                # failed.
                tune.report({**{k: last.get(k, math.nan) for k in ("epoch", METRIC)}, **extra,
                             "error": describe(item)[:500]})
                raise item
            tune.report(item)  # Tune ends a stopped trial here (SystemExit)
            pipe.ack()
    finally:
        pipe.halt()
        thread.join()  # never two trainings on one reused worker


class _Pipe:
    """One trial's results, from its training thread to the thread Tune reports from. The
    training thread runs at most one result ahead; halt() makes its next put raise
    TrialStopped."""

    END = object()

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._cond = threading.Condition()
        self._acked = 0
        self._put = 0
        self._halted = False

    def put(self, item: Any, *, wait: bool) -> None:
        with self._cond:
            if self._halted and item is not _Pipe.END:
                raise TrialStopped
            self._items.append(item)
            self._put += 1
            self._cond.notify_all()
            if item is _Pipe.END or isinstance(item, BaseException):
                return
            # Lockstep: until this result is reported. Ahead: until the one before it is.
            behind = 0 if wait else 1
            self._cond.wait_for(lambda: self._halted or self._acked >= self._put - behind)
            if self._halted:
                raise TrialStopped

    def get(self) -> Any:
        with self._cond:
            self._cond.wait_for(lambda: bool(self._items))
            return self._items.pop(0)

    def ack(self) -> None:
        with self._cond:
            self._acked += 1
            self._cond.notify_all()

    def halt(self) -> None:
        with self._cond:
            self._halted = True
            self._cond.notify_all()


def describe(err: BaseException) -> str:
    """A failed run's reason: the exception's last line; for a loop of one's own (any error
    that is not one of the trainer's) also the file and line it was raised at."""
    if isinstance(err, TrialDiverged):
        return f"{type(err).__name__}: {err}"
    return plugins.describe_error(err)


def final_run(cfg_dict: dict[str, Any], provided: dict[str, Any] | None = None) -> dict[str, Any]:
    """One run of the final stage (a Ray task): its test accuracy and memorisation."""
    provide(provided)
    cfg = TrialConfig.from_dict(cfg_dict)
    r = run_trial(cfg, final=True)
    if cfg.trainer is not None and not math.isfinite(r.final["test_acc"]):
        raise ReportError(f"trainer {cfg.trainer!r} reported no test_acc in the final stage: "
                          "when trial.final is true, report test_acc (the final stage compares "
                          "test accuracy)")
    return {"seed": cfg.seed, "test_acc": r.final["test_acc"], "memorised": r.final["memorised"],
            "best_test_acc": max(m["test_acc"] for m in r.history), "epochs": r.epochs_completed,
            "wall_s": round(r.wall_s, 2), "node": hardware(gpu=cfg.device != "cpu"),
            # The report's learning curves of the best EDF against CE over the whole budget.
            "history": [{k: round(float(m[k]), 4) for k in FINAL_CURVES if k in m}
                        for m in r.history]}


def race_run(cfg_dict: dict[str, Any], provided: dict[str, Any] | None = None) -> dict[str, Any]:
    """One re-evaluation run of a race candidate (a Ray task): the search's split and data, a
    new training seed; every epoch's validation accuracy, and the last test accuracy."""
    provide(provided)
    cfg = TrialConfig.from_dict(cfg_dict)
    history: list[dict[str, float]] = []
    try:
        r = run_trial(cfg, report=history.append, data=_prepared(cfg))
    except TrialDiverged as err:
        # An EDF that diverges or collapses on another seed is what a race is there to catch:
        # the run is recorded, and scores nothing.
        return {"seed": cfg.seed, "val_accs": [round(float(m[METRIC]), 5) for m in history],
                "test_acc": None, "epochs": len(history), "wall_s": None,
                "failed": f"{type(err).__name__}: {err}"[:200]}
    test = float(r.final["test_acc"])
    return {"seed": cfg.seed, "val_accs": [round(float(m[METRIC]), 5) for m in r.history],
            "test_acc": round(test, 5) if math.isfinite(test) else None,
            "epochs": r.epochs_completed,
            "wall_s": round(r.wall_s, 2)}


FINAL_CURVES = ("epoch", "test_acc", "memorised", "intact_acc", "train_loss")
