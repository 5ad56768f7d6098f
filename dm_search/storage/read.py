"""Reading what a study recorded: each trial's config, EDF, history and node, and the study's
spec, provenance, final stage, races, locations and driver."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from dm_search.study.spec import StudySpec
from dm_search.storage.keys import (
    _BLOB,
    DRIVER,
    FINISHED,
    GONE_AFTER_S,
    LOCATIONS,
    StudyKey,
    TrialKey,
    study_blob,
    trial_blob,
)
from dm_search.storage.loading import Subset

__all__ = ["DASHBOARD", "driver_state", "duplicate_of", "final_stage", "has_config",
           "is_reference", "missing_references", "race", "reference_trials", "study_identity",
           "study_locations", "study_provenance", "study_runs", "study_spec", "trial_config",
           "trial_edf", "trial_epochs", "trial_final", "trial_node", "trial_schedule"]


# optuna-dashboard lists a trial's user attributes, parameters and values, and reads its own
# keys (notes, artifacts, constraints) among the system attributes; dm-search's blobs it never
# shows. Its intermediate-value plot draws a trace per trial: with a study's latest value per
# trial it repeats the history plot, and 10,000 traces held a browser for 85 s.
DASHBOARD = Subset(system_skip=_BLOB, intermediate=False)


# ------------------------------------------------------------------ reading the schema
def trial_edf(t: FrozenTrial) -> dict[str, Any] | None:
    """The trial's EDF config; None for a trial that never got one."""
    return trial_blob(t, TrialKey.EDF)


def trial_config(t: FrozenTrial) -> dict[str, Any]:
    """The resolved trial config (KeyError for a trial that never got one)."""
    cfg = trial_blob(t, TrialKey.CONFIG)
    if cfg is None:
        raise KeyError(f"trial {t.number} has no config")
    return dict(cfg)


def has_config(t: FrozenTrial) -> bool:
    return trial_blob(t, TrialKey.CONFIG) is not None


def trial_final(t: FrozenTrial) -> dict[str, float]:
    """The last epoch's metrics (empty before the first epoch)."""
    final = trial_blob(t, TrialKey.FINAL)
    if final is None:  # a study recorded before the last epoch was kept on its own
        final = (trial_blob(t, TrialKey.HISTORY) or [{}])[-1]
    return dict(final or {})


def trial_epochs(t: FrozenTrial) -> tuple[int | None, int | None]:
    """(epochs completed, epochs of the full budget); None where not recorded yet."""
    return t.user_attrs.get(TrialKey.EPOCHS), t.user_attrs.get(TrialKey.TOTAL)


def duplicate_of(t: FrozenTrial) -> int | None:
    """The number of the trial whose configuration ``t`` repeats (``t`` was not trained)."""
    return t.user_attrs.get(TrialKey.DUPLICATE)


def trial_node(t: FrozenTrial) -> dict[str, Any]:
    """``{"ip", "id"}`` of the Ray node the trial ran on (empty before its first epoch)."""
    return dict(trial_blob(t, TrialKey.NODE) or {})


def study_spec(study: optuna.Study) -> dict[str, Any]:
    """The spec the study was created with (no storage URL)."""
    return dict(study_blob(study, StudyKey.SPEC) or {})


def study_identity(study: optuna.Study) -> dict[str, Any]:
    return dict(study_blob(study, StudyKey.IDENTITY) or {})


def final_stage(study: optuna.Study) -> dict[str, Any] | None:
    return study_blob(study, StudyKey.FINAL)


def race(study: optuna.Study) -> dict[str, Any] | None:
    """The races' record: each candidate trial with its re-evaluation runs, the rule, and the
    winner once decided (None for a study that never raced)."""
    return study_blob(study, StudyKey.RACE)


def study_runs(study: optuna.Study) -> list[dict[str, Any]]:
    """Each submission of the study, oldest first: when, dm-search's and the libraries'
    versions, the git commit, and the driver's machine (empty for an older study)."""
    return list(study_blob(study, StudyKey.RUNS) or [])


def study_provenance(study: optuna.Study) -> dict[str, Any]:
    """Package version, creation time, dataset fingerprint and measured noise rate."""
    return {"version": study.user_attrs.get(StudyKey.VERSION),
            "created": study.user_attrs.get(StudyKey.CREATED),
            "fingerprint": study.user_attrs.get(StudyKey.FINGERPRINT),
            "noise_rate": study.user_attrs.get(StudyKey.NOISE_RATE)}


def trial_schedule(t: FrozenTrial) -> dict[str, Any] | None:
    """``{"edf_end", "ramp"}`` of a trial whose EDF moves over training; None for a fixed EDF."""
    loss = (trial_blob(t, TrialKey.CONFIG) or {}).get("loss") or {}
    if loss.get("edf_end") is None:
        return None
    return {"edf_end": loss["edf_end"], "ramp": loss["ramp"]}


def is_reference(t: FrozenTrial) -> bool:
    return bool(t.user_attrs.get(TrialKey.REFERENCE))


def reference_trials(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if is_reference(t)]


def missing_references(study: optuna.Study, spec: StudySpec) -> list[Any]:
    """The spec's baselines (as EDFs) that have no finished reference trial yet."""
    from dm_search.edf import EDF

    done = {EDF.from_config(trial_edf(t) or {}) for t in reference_trials(study)
            if t.user_attrs.get(TrialKey.STOP) == FINISHED and t.state == TrialState.COMPLETE}
    return [e for e in spec.baseline_edfs() if e not in done]


def study_locations(system_attrs: dict[str, Any]) -> dict[str, str]:
    """The recorded folders, from a study's system attributes (empty for an older study)."""
    return dict(system_attrs.get(LOCATIONS) or {})


def driver_state(study: optuna.Study) -> dict[str, Any] | None:
    """The last heartbeat with ``age_s`` and ``alive`` (None for a study never driven).
    A ``running`` driver silent for GONE_AFTER_S is reported ``gone``."""
    doc = study._storage.get_study_system_attrs(study._study_id).get(DRIVER)
    if not doc:
        return None
    age = (dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(doc["beat"])).total_seconds()
    state = doc["state"]
    if state == "running" and age > GONE_AFTER_S:
        state = "gone"
    return {**doc, "state": state, "age_s": round(age), "alive": state == "running"}
