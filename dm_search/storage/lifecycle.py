"""A study's life in the database: created, checked against a new submission, resumed, and
repaired after an interruption."""

from __future__ import annotations

import datetime as dt
import warnings
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
import sqlalchemy
from optuna.trial import TrialState

from dm_search._version import __version__
from dm_search.common.errors import ConfigError
from dm_search.common.paths import creatable
from dm_search.common.records import without_unset

if TYPE_CHECKING:
    from dm_search.study.spec import StudySpec
from dm_search.storage.epochs import ensure_tables, migrate_histories
from dm_search.storage.keys import INTERRUPTED, METRIC_NAME, StudyKey, TrialKey, put_study_blob
from dm_search.storage.ranking import counted_trials
from dm_search.storage.read import is_reference, study_identity
from dm_search.storage.url import (
    StorageUnavailable,
    _sqlite_problem,
    _study_names,
    _url_of,
    mask_url,
    open_storage,
)
from dm_search.storage.write import record_run

__all__ = ["Opened", "Resume", "StudyClash", "check_submission", "check_submission_at",
           "open_study", "repair_interrupted"]


class StudyClash(ConfigError):
    """A study of that name exists and cannot be reused as asked."""


def repair_interrupted(study: optuna.Study) -> int:
    """Mark trials left RUNNING (by a killed or stopped driver) as failed with reason
    'interrupted', and queue each searched one's parameters again, so that a resumed study
    runs the same configuration (a warm-start point, say) instead of losing it."""
    storage = study._storage
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_user_attr(t._trial_id, TrialKey.STOP, INTERRUPTED)
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        if t.params and not is_reference(t):  # a reference is rerun as a missing reference
            study.enqueue_trial(t.params)
        n += 1
    return n


@dataclass
class Opened:
    study: optuna.Study
    created: bool
    repaired: int
    done: int


class Resume(StrEnum):
    """What to do with a study of the spec's name: ``submit``, ``--resume`` and
    ``--resume-if-exists``."""

    NEW = "new"  # create it; an existing one is an error
    EXISTING = "existing"  # continue it; a missing one is an error
    EITHER = "either"  # continue it if it exists, else create it


def check_submission(storage: optuna.storages.RDBStorage, spec: StudySpec, *,
                     resume: Resume | bool) -> optuna.Study | None:
    """The existing study ``spec`` may continue (None when one is to be created); raises
    StudyClash for a different spec under the name, an existing study that is not to be
    resumed, or a missing one that is. Writes nothing."""
    mode = Resume(resume) if isinstance(resume, str) else (
        Resume.EXISTING if resume else Resume.NEW)
    names = _study_names(storage)
    if spec.name not in names:
        if mode == Resume.EXISTING:
            raise StudyClash(
                f"there is no study named {spec.name!r} to resume in "
                f"{mask_url(_url_of(storage))}; studies there: {', '.join(names) or 'none'}. "
                "Submit without --resume to create it (or check --name and --storage)."
            )
        return None
    study = optuna.load_study(study_name=spec.name, storage=storage)
    recorded = study_identity(study)
    # Studies recorded before the final stage left the identity still carry it; fields added
    # since (unset: None) are not differences.
    if without_unset({k: v for k, v in recorded.items() if k != "final"}) != without_unset(
            spec.identity()):
        raise StudyClash(
            f"a study named {spec.name!r} already exists with a different spec. Submit under "
            "another name (--name NEW), or resubmit the spec it was created with to resume "
            "it (see dm-search status " + spec.name + ")."
        )
    if mode == Resume.NEW:
        raise StudyClash(
            f"study {spec.name!r} already exists. Add --resume to continue it (completed "
            "trials are kept), or --name NEW to start another."
        )
    return study


def check_submission_at(url: str, spec: StudySpec, *, resume: Resume | bool) -> None:
    """check_submission before anything is written: a SQLite file that is not there yet holds
    no study, and is not created here."""
    if url.startswith("sqlite"):
        path = sqlalchemy.engine.make_url(url).database
        if path and path != ":memory:" and not Path(path).exists():
            if resume in (True, Resume.EXISTING):
                raise StudyClash(f"there is no study named {spec.name!r} to resume: there is no "
                                 f"study database at {path} yet. Submit without --resume to "
                                 "create it (or check --storage).")
            problem = creatable(Path(path))
            if problem:
                raise StorageUnavailable(_sqlite_problem(Path(path), problem))
            return
    check_submission(open_storage(url, create=False), spec, resume=resume)


def _name_the_metric(study: optuna.Study) -> None:
    # Without a name, optuna-dashboard calls the value "Objective 0".
    if study.metric_names != [METRIC_NAME]:
        with warnings.catch_warnings():  # "experimental" since Optuna 3.2, and still there
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([METRIC_NAME])


def open_study(storage: optuna.storages.RDBStorage, spec: StudySpec, *,
               resume: Resume | bool) -> Opened:
    """Create the study, or reopen it: refuses a different spec under the same name, repairs
    interrupted trials, and counts the trials already done."""
    study = check_submission(storage, spec, resume=resume)
    ensure_tables(storage.engine)
    if study is not None:
        migrate_histories(study)  # a study recorded before the epoch table
        # The budget may have changed (n_trials, budget_epochs): the record follows the spec.
        put_study_blob(study, StudyKey.SPEC, spec.stored())
        _name_the_metric(study)  # studies made before it was named
        repaired = repair_interrupted(study)
        record_run(study)
        return Opened(study, False, repaired, counted_trials(study))
    study = optuna.create_study(storage=storage, study_name=spec.name, direction="maximize")
    _name_the_metric(study)
    put_study_blob(study, StudyKey.SPEC, spec.stored())
    put_study_blob(study, StudyKey.IDENTITY, spec.identity())
    study.set_user_attr(StudyKey.VERSION, __version__)
    study.set_user_attr(StudyKey.CREATED, dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    record_run(study)
    return Opened(study, True, 0, 0)
