"""What the driver writes while a study runs: each trial's config and epochs, failures,
duplicates, references, the races, the final stage, the dataset and the driver's heartbeat."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import socket
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.trial import FrozenTrial, TrialState

from dm_search.common.records import without_unset
from dm_search.storage.epochs import EpochReport, write_reports
from dm_search.storage.keys import (
    DRIVER,
    EARLY,
    FINISHED,
    LOCATIONS,
    MAX_RUNS,
    SHORT_REASON,
    StudyKey,
    TrialKey,
    put_study_blob,
    put_trial_blob,
)
from dm_search.storage.read import duplicate_of, has_config, study_runs, trial_config

__all__ = ["config_key", "find_twin", "finish_reference_trial", "new_reference_trial",
           "record_dataset", "record_driver", "record_duplicate", "record_epoch", "record_failure",
           "record_final_stage", "record_locations", "record_race", "record_run",
           "record_trial_config", "stop_after"]


def record_race(study: optuna.Study, record: dict[str, Any]) -> None:
    """Written after every re-evaluation run, so that a resumed study keeps the runs done."""
    put_study_blob(study, StudyKey.RACE, record)


def record_run(study: optuna.Study) -> None:
    from dm_search.common import provenance

    runs = study_runs(study)
    runs.append({"started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                 "versions": provenance.versions(), "commit": provenance.git_commit(),
                 "driver": provenance.hardware()})
    if len(runs) > MAX_RUNS:
        runs = runs[:1] + runs[-(MAX_RUNS - 1):]
    put_study_blob(study, StudyKey.RUNS, runs)


# ------------------------------------------------------------------ writing trials
def record_epoch(storage: optuna.storages.BaseStorage, trial_id: int, *, epoch: int,
                 total: int, metrics: dict[str, float], node: dict[str, Any] | None = None,
                 value: float | None = None, restart: bool = False) -> str:
    """A running trial's progress after ``epoch``, written now; returns the stop reason. The
    driver hands its reports to an EpochWriter instead, which writes them in batches. Written
    at every epoch: if the scheduler stops the trial here, this is the last moment the trial
    can still be updated (Optuna refuses updates to finished trials). ``value``: Optuna's
    intermediate value (a searched trial's); ``node``: with a trial's first report."""
    report = EpochReport(trial_id, _study_id_of(storage, trial_id), epoch, total, dict(metrics),
                         value=value, node=node, restart=restart)
    write_reports(storage, [report])
    return stop_after(epoch, total)


def stop_after(epoch: int, total: int) -> str:
    """The stop reason a trial has after reporting ``epoch`` of ``total``."""
    return FINISHED if epoch >= total else EARLY


def _study_id_of(storage: Any, trial_id: int) -> int:
    from optuna.storages._rdb import models as om

    engine = getattr(storage, "_backend", storage).engine
    table = om.TrialModel.__table__
    with engine.connect() as c:
        return int(c.execute(sa.select(table.c.study_id).where(table.c.trial_id == trial_id))
                   .scalar_one())


def _r6(v: Any) -> Any:
    return round(v, 6) if isinstance(v, float) else v


def record_failure(storage: optuna.storages.BaseStorage, trial_id: int, reason: str,
                   node: dict[str, Any] | None = None) -> None:
    """The reason in full as a blob; the row's stop reason cut to SHORT_REASON characters.
    ``node``: where it failed, for a trial that failed before its first epoch."""
    if node is not None:
        put_trial_blob(storage, trial_id, TrialKey.NODE, node)
        storage.set_trial_user_attr(trial_id, TrialKey.NODE, node.get("ip"))
    text = f"failed: {reason}"
    if len(text) > SHORT_REASON:
        put_trial_blob(storage, trial_id, TrialKey.STOP, text)
        text = text[:SHORT_REASON - 1] + "\u2026"
    storage.set_trial_user_attr(trial_id, TrialKey.STOP, text)


def record_dataset(study: optuna.Study, fingerprint: str | None, noise_rate: float | None,
                   ) -> None:
    study.set_user_attr(StudyKey.FINGERPRINT, fingerprint)
    study.set_user_attr(StudyKey.NOISE_RATE, noise_rate)


def record_final_stage(study: optuna.Study, result: dict[str, Any]) -> None:
    put_study_blob(study, StudyKey.FINAL, result)

def record_trial_config(trial: Any, cfg: dict[str, Any]) -> None:
    """The resolved trial config and its EDF in both coordinate pairs, on a running trial."""
    from dm_search.edf import EDF

    edf = EDF.from_config(cfg["loss"]["edf"])
    trial = getattr(trial, "ot_trial", trial)  # Ray's wrapper around an Optuna trial
    put_trial_blob(trial.storage, trial._trial_id, TrialKey.CONFIG, cfg)
    put_trial_blob(trial.storage, trial._trial_id, TrialKey.EDF, edf.to_config())
    trial.set_user_attr(TrialKey.FAMILY, edf.family)
    trial.set_user_attr(TrialKey.MODE, _r6(edf.mode))
    trial.set_user_attr(TrialKey.SPREAD, _r6(edf.spread))
    trial.set_user_attr(TrialKey.MEAN, round(edf.mean, 6))
    trial.set_user_attr(TrialKey.STD, round(edf.std, 6))
    if cfg["loss"].get("edf_end") is not None:
        end = EDF.from_config(cfg["loss"]["edf_end"])
        ramp = cfg["loss"]["ramp"]
        put_trial_blob(trial.storage, trial._trial_id, TrialKey.EDF_END, end.to_config())
        trial.set_user_attr(TrialKey.MODE_END, _r6(end.mode))
        trial.set_user_attr(TrialKey.SPREAD_END, _r6(end.spread))
        trial.set_user_attr(TrialKey.MEAN_END, round(end.mean, 6))
        trial.set_user_attr(TrialKey.STD_END, round(end.std, 6))
        trial.set_user_attr(TrialKey.RAMP, f"{ramp['shape']} {ramp['start']:g}-{ramp['end']:g}")


def _rounded(v: Any) -> Any:
    # Ten significant digits: parameters reached by different routes (q = 0.7 from a baseline,
    # 0.6999999999999991 from a mean) are the same configuration.
    if isinstance(v, float):
        return float(f"{v:.10g}")
    if isinstance(v, dict):
        return {k: _rounded(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_rounded(x) for x in v]
    return v


def config_key(cfg: dict[str, Any]) -> str:
    """What makes two trial configs train the same thing (not how many threads they use)."""
    return json.dumps(_rounded(without_unset({k: v for k, v in cfg.items()
                                              if k not in ("threads", "checkpoint",
                                                           "compile")})),
                      sort_keys=True)


def find_twin(study: optuna.Study | None, cfg: dict[str, Any], number: int
              ) -> FrozenTrial | None:
    """An earlier trial of the study (not a duplicate itself, not failed) that trains exactly
    ``cfg``; None when there is none."""
    if study is None:
        return None
    key = config_key(cfg)
    for t in study.get_trials(deepcopy=False):
        if t.number == number or duplicate_of(t) is not None:
            continue
        if t.state == TrialState.FAIL or not has_config(t):
            continue
        if config_key(trial_config(t)) == key:
            return t
    return None


def record_duplicate(trial: Any, twin: FrozenTrial) -> None:
    """Mark ``trial`` as a copy of ``twin``: its twin's final value as its one intermediate
    value (so samplers learn from it), its stop reason saying whose copy it is."""
    trial.set_user_attr(TrialKey.DUPLICATE, twin.number)
    trial.set_user_attr(TrialKey.STOP, f"duplicate of trial {twin.number}")
    trial.set_user_attr(TrialKey.EPOCHS, 0)
    value = twin.value
    if value is None and twin.intermediate_values:
        value = twin.intermediate_values[max(twin.intermediate_values)]
    if value is not None and math.isfinite(value):
        trial.report(float(value), int(twin.user_attrs.get(TrialKey.EPOCHS) or 1))


def new_reference_trial(study: optuna.Study, cfg: dict[str, Any]) -> optuna.Trial:
    """A running trial with no searched parameters, for a baseline. Made in the storage, not
    with ``study.ask()``, which would take the next enqueued (warm-start or grid) point."""
    trial_id = study._storage.create_new_trial(study._study_id)
    trial = optuna.Trial(study, trial_id)
    record_trial_config(trial, cfg)
    trial.set_user_attr(TrialKey.REFERENCE, True)
    return trial


def finish_reference_trial(study: optuna.Study, number: int, value: float | None) -> None:
    """Close a reference trial: its last validation accuracy, or FAIL without one."""
    try:
        if value is None or not math.isfinite(value):
            study.tell(number, state=TrialState.FAIL)
        else:
            study.tell(number, float(value))
    except (RuntimeError, ValueError):
        pass  # already closed (a repaired interrupted trial): nothing left to write


def record_locations(study: optuna.Study, artifacts: Path, ray_output: Path) -> None:
    """Where this run keeps the study's trial artifacts and Ray output (absolute paths), so
    that the dashboard finds them from the database alone."""
    study._storage.set_study_system_attr(study._study_id, LOCATIONS, {
        "artifacts": str(artifacts.resolve()), "ray": str(ray_output.resolve())})


def record_driver(study: optuna.Study, state: str, command: str | None = None) -> None:
    """The driver's heartbeat: ``running`` every HEARTBEAT_S, then how it ended
    (``done``, ``interrupted``, ``failed``). ``command`` resumes the study."""
    old = study._storage.get_study_system_attrs(study._study_id).get(DRIVER) or {}
    doc = {"host": socket.gethostname(), "pid": os.getpid(), "state": state,
           "beat": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
           "resume": command or old.get("resume")}
    study._storage.set_study_system_attr(study._study_id, DRIVER, doc)
