"""What runs inside a Ray worker: a study's trials and its final-stage runs.

Kept apart from the driver (``runner``) so that a worker imports only the trainer, its data and
``ray.tune``: neither Optuna nor the dashboard's plotting, which a worker never uses.
"""

from __future__ import annotations

import json
import math
import threading
from typing import Any

import ray
from ray import tune

from dm_search.common.provenance import hardware
from dm_search.common.records import METRIC
from dm_search.training.config import TrialConfig
from dm_search.training.data import PreparedData, prepare_data
from dm_search.training.trainer import TrialDiverged, run_trial, total_epochs

_DATA_CACHE: dict[str, PreparedData] = {}


def _prepared(cfg: TrialConfig) -> PreparedData:
    # Reused actors keep their data: a study's trials usually share one dataset and split.
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


class _Halted(Exception):
    """The trial was stopped while its training thread ran ahead."""


def trainable(config: dict[str, Any]) -> None:
    """One Ray Tune trial: train ``config["trial_config"]``, reporting every epoch."""
    if config.get("duplicate_of") is not None:
        return  # the same configuration was trained already: its result is on record
    cfg = TrialConfig.from_dict(config["trial_config"])
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    if cfg.threads is None:
        cfg = cfg.model_copy(update={"threads": max(1, int(cpus))})
    data = _prepared(cfg)
    extra = {
        "total_epochs": total_epochs(cfg, len(data.y_train)),
        "node_ip": ray.util.get_node_ip_address(),
        "node_id": ray.get_runtime_context().get_node_id(),
        # A JSON string: Tune would flatten a dict into one metric per key.
        "node_hardware": json.dumps(hardware(gpu=cfg.device != "cpu")),
        "fingerprint": data.fingerprint,
        "noise_rate": data.noise_rate,
    }
    last: dict[str, float] = {}
    pipe = _Pipe()

    def report(metrics: dict[str, float]) -> None:  # in the training thread
        last.update(metrics)
        pipe.put({**metrics, **extra}, wait=metrics["epoch_s"] >= PIPELINE_MAX_EPOCH_S)

    def train() -> None:
        try:
            run_trial(cfg, report=report, data=data)
        except _Halted:
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
                             "error": f"{type(item).__name__}: {item}"[:500]})
                raise item
            tune.report(item)  # Tune ends a stopped trial here (SystemExit)
            pipe.ack()
    finally:
        pipe.halt()
        thread.join()  # never two trainings on one reused worker


class _Pipe:
    """One trial's results, from its training thread to the thread Tune reports from. The
    training thread runs at most one result ahead; halt() makes its next put raise _Halted."""

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
                raise _Halted
            self._items.append(item)
            self._put += 1
            self._cond.notify_all()
            if item is _Pipe.END or isinstance(item, BaseException):
                return
            # Lockstep: until this result is reported. Ahead: until the one before it is.
            behind = 0 if wait else 1
            self._cond.wait_for(lambda: self._halted or self._acked >= self._put - behind)
            if self._halted:
                raise _Halted

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


def final_run(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """One run of the final stage (a Ray task): its test accuracy and memorisation."""
    cfg = TrialConfig.from_dict(cfg_dict)
    r = run_trial(cfg)
    return {"seed": cfg.seed, "test_acc": r.final["test_acc"], "memorised": r.final["memorised"],
            "best_test_acc": max(m["test_acc"] for m in r.history), "epochs": r.epochs_completed,
            "wall_s": round(r.wall_s, 2), "node": hardware(gpu=cfg.device != "cpu"),
            # The report's learning curves of the best EDF against CE over the whole budget.
            "history": [{k: round(float(m[k]), 4) for k in FINAL_CURVES if k in m}
                        for m in r.history]}


def race_run(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """One re-evaluation run of a race candidate (a Ray task): the search's split and data, a
    new training seed; every epoch's validation accuracy, and the last test accuracy."""
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
    return {"seed": cfg.seed, "val_accs": [round(float(m[METRIC]), 5) for m in r.history],
            "test_acc": round(float(r.final["test_acc"]), 5), "epochs": r.epochs_completed,
            "wall_s": round(r.wall_s, 2)}


FINAL_CURVES = ("epoch", "test_acc", "memorised", "intact_acc", "train_loss")
