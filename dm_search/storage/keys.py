"""What the study database holds and under which names: the trial and study keys, the
blobs kept as JSON text, the stop reasons, and the study attributes of the driver."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from dm_search.common.records import METRIC

__all__ = [
    "BLOBS",
    "DRIVER",
    "EARLY",
    "FINISHED",
    "GONE_AFTER_S",
    "HEARTBEAT_S",
    "INTERRUPTED",
    "LOCATIONS",
    "MAX_RUNS",
    "METRIC_NAME",
    "SHORT_REASON",
    "StudyKey",
    "TrialKey",
    "blob",
    "put_study_blob",
    "put_trial_blob",
    "study_blob",
    "trial_blob",
]

class TrialKey(StrEnum):
    """The trial attributes dm-search writes: the study schema, trial side. Short scalars are
    user attributes, which optuna-dashboard lists on every trial row; the keys in BLOBS
    (configs, the per-epoch history) are system attributes (see blob)."""

    CONFIG = "config"  # the resolved trial config
    EDF = "edf"  # its EDF config
    FAMILY = "family"
    MODE = "mode"
    SPREAD = "spread"
    MEAN = "mean"
    STD = "std"
    # An emphasis schedule's end and ramp (absent for a fixed EDF).
    EDF_END = "edf_end"
    MODE_END = "mode_end"
    SPREAD_END = "spread_end"
    MEAN_END = "mean_end"
    STD_END = "std_end"
    RAMP = "ramp"
    REFERENCE = "reference"  # a baseline run once per study at full budget, never searched
    DUPLICATE = "duplicate_of"  # the earlier trial whose configuration this one repeats
    TOTAL = "total_epochs"
    EPOCHS = "epochs_completed"
    STOP = "stop_reason"
    FINAL = "final_metrics"  # the last epoch's metrics
    HISTORY = "history"  # older studies only: every epoch's metrics (now the epoch table)
    NODE = "node"  # the Ray node the trial ran on: its address (a dict with its id: a blob)
    VAL_ACC = "val_acc"  # the last epoch's, like the three below
    TEST_ACC = "test_acc"
    MEMORISED = "memorised"


class StudyKey(StrEnum):
    """The study attributes dm-search writes: the study schema, study side (SPEC, IDENTITY
    and FINAL are system attributes, the rest user attributes)."""

    SPEC = "spec"
    IDENTITY = "spec_identity"
    VERSION = "version"
    CREATED = "created"
    FINGERPRINT = "dataset_fingerprint"
    NOISE_RATE = "noise_rate"  # measured on the training split
    FINAL = "final_stage"
    RACE = "race"  # the re-evaluation runs of the top candidates, and the winner they chose
    RUNS = "runs"  # each submission's versions, git commit and driver machine (provenance)


# Kept out of the user attributes, which the dashboard shows in full on each trial row (a
# config and a 60-epoch history made rows 600 px tall) and cuts at 1024 characters. A study
# written before they moved has them as user attributes, where the readers still look.
BLOBS = frozenset({TrialKey.CONFIG, TrialKey.EDF, TrialKey.EDF_END, TrialKey.HISTORY,
                   TrialKey.FINAL, TrialKey.NODE, StudyKey.SPEC, StudyKey.IDENTITY,
                   StudyKey.FINAL, StudyKey.RACE, StudyKey.RUNS})
_BLOB = "dm_search:"


def blob(system: dict[str, Any], user: dict[str, Any], key: str) -> Any:
    value = system.get(_BLOB + key)
    if value is None:
        value = user.get(key)
        if key == TrialKey.NODE and not isinstance(value, dict):
            return None  # the user attribute is the address now; the dict is the blob
    return value


def trial_blob(t: FrozenTrial, key: str) -> Any:
    return blob(t.system_attrs, t.user_attrs, key)


def study_blob(study: optuna.Study, key: str) -> Any:
    return blob(study._storage.get_study_system_attrs(study._study_id), study.user_attrs, key)


def put_trial_blob(storage: optuna.storages.BaseStorage, trial_id: int, key: str,
                    value: Any) -> None:
    storage.set_trial_system_attr(trial_id, _BLOB + key, value)


def put_study_blob(study: optuna.Study, key: str, value: Any) -> None:
    study._storage.set_study_system_attr(study._study_id, _BLOB + key, value)


FINISHED = "finished"
EARLY = "early-stopped"
INTERRUPTED = "failed: interrupted"


# A study resumed every few minutes keeps its first runs and the latest ones.
MAX_RUNS = 20


SHORT_REASON = 40


METRIC_NAME = METRIC  # the name Optuna shows for a trial's value


# ------------------------------------------------------------------ where a study's files are
LOCATIONS = "locations"  # a study system attribute: its artifacts and Ray output folders


# ------------------------------------------------------------------ the driver's heartbeat
DRIVER = "driver"  # a study system attribute: which process runs it, and when it last said so
HEARTBEAT_S = 10.0
# A driver silent for this long is gone: several missed beats, so that a busy machine or a
# slow database does not make a live study look dead.
GONE_AFTER_S = 6 * HEARTBEAT_S
