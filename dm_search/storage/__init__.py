"""Study persistence: storage URL -> Optuna RDBStorage; create, resume and repair studies.

The database is the source of truth: every trial's resolved config, epochs completed, stop
reason, diagnostics and node are trial user attributes; the spec, package version and dataset
fingerprint are study user attributes.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import socket
import sqlite3
import warnings
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from dm_search._version import __version__
from dm_search.common.errors import ConfigError
from dm_search.common.paths import creatable
from dm_search.common.records import without_unset

if TYPE_CHECKING:
    from dm_search.study.spec import StudySpec

__all__ = [
    "ENV_STORAGE",
    "StorageUnavailable",
    "StudyClash",
    "best_trial",
    "mask_url",
    "open_storage",
    "open_study",
    "resolve_url",
    "study_summary",
    "trial_summary",
]

ENV_STORAGE = "DM_SEARCH_STORAGE"

class TrialKey(StrEnum):
    """The trial attributes dm-search writes: the study schema, trial side. Short scalars are
    user attributes, which optuna-dashboard lists on every trial row; the keys in BLOBS
    (configs, the per-epoch history) are system attributes (see _blob)."""

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
    FINAL = "final_metrics"  # older studies only: now the history's last epoch
    HISTORY = "history"  # every epoch's metrics
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


def _blob(system: dict[str, Any], user: dict[str, Any], key: str) -> Any:
    value = system.get(_BLOB + key)
    if value is None:
        value = user.get(key)
        if key == TrialKey.NODE and not isinstance(value, dict):
            return None  # the user attribute is the address now; the dict is the blob
    return value


def _trial_blob(t: FrozenTrial, key: str) -> Any:
    return _blob(t.system_attrs, t.user_attrs, key)


def _study_blob(study: optuna.Study, key: str) -> Any:
    return _blob(study._storage.get_study_system_attrs(study._study_id), study.user_attrs, key)


def _put_trial_blob(storage: optuna.storages.BaseStorage, trial_id: int, key: str,
                    value: Any) -> None:
    storage.set_trial_system_attr(trial_id, _BLOB + key, value)


def _put_study_blob(study: optuna.Study, key: str, value: Any) -> None:
    study._storage.set_study_system_attr(study._study_id, _BLOB + key, value)


FINISHED = "finished"
EARLY = "early-stopped"
INTERRUPTED = "failed: interrupted"


class StorageUnavailable(ConfigError):
    """The database cannot be reached or opened."""


class StudyClash(ConfigError):
    """A study of that name exists and cannot be reused as asked."""


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***, for messages and logs."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL sqlalchemy understands: show only its scheme
        return url.split("://", 1)[0] + "://***" if "://" in url else "***"


def resolve_url(cli: str | None, spec: StudySpec | None, study_dir: str = "runs") -> str:
    """--storage, else $DM_SEARCH_STORAGE, else the spec's storage, else SQLite in the study
    directory. A plain file path (no ``scheme://``) means that SQLite file."""
    for url in (cli, os.environ.get(ENV_STORAGE), spec.storage if spec is not None else None):
        if url:
            return url if "://" in url else f"sqlite:///{Path(url).expanduser().resolve()}"
    folder = Path(spec.study_dir if spec is not None
                  else os.environ.get("DM_SEARCH_STUDY_DIR", study_dir))
    return f"sqlite:///{folder / 'studies.db'}"


def artifact_dir(url: str, study_dir: str | None = None) -> Path | None:
    """Where trial artifacts (per-trial EDF and learning-curve images) live: the study
    directory when given, else beside a SQLite database; None for a server database."""
    if study_dir is not None:
        return Path(study_dir) / "artifacts"
    if url.startswith("sqlite"):
        db = sqlalchemy.engine.make_url(url).database
        if db and db != ":memory:":
            return Path(db).parent / "artifacts"
    return None


# Real URLs of the storages this process opened, by their masked form: what a sealed storage
# needs to reconnect after a copy or an unpickling in the same process.
_OPENED: dict[str, str] = {}


class SealedStorage(optuna.storages.RDBStorage):
    """An RDBStorage whose pickled form carries the URL without its password.

    Ray Tune pickles its searcher (which holds the storage) into ``tuner.pkl`` and the
    searcher state. Unpickled, the storage finds its password again from this process's own
    connections or from $DM_SEARCH_STORAGE; where neither has it, it fails to connect rather
    than having kept the secret on disk.
    """

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        state["url"] = mask_url(self.url)
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        masked = state["url"]
        env = os.environ.get(ENV_STORAGE, "")
        known = _OPENED.get(masked) or (env if env and mask_url(env) == masked else None)
        super().__setstate__({**state, "url": known or masked})


def _sqlite_problem(db: Path, err: BaseException) -> str:
    if isinstance(err, sqlite3.DatabaseError) and "not a database" in str(err):
        what = "the file is not an SQLite database"
    elif isinstance(err, NotADirectoryError | FileExistsError):
        what = "a part of its folder path is a file"
    elif isinstance(err, PermissionError):
        what = "permission denied"
    else:
        what = str(err)
    return (f"cannot use {db} as the study database: {what}. Point --storage (or "
            "$DM_SEARCH_STORAGE, or the spec's storage) at a writable .db path, e.g. "
            "sqlite:///runs/studies.db")


def open_storage(url: str, *, create: bool = True) -> optuna.storages.RDBStorage:
    """Connect to the study database. SQLite gets WAL mode and a busy timeout so that the
    dashboard can read while a study writes. Raises StorageUnavailable with the URL masked."""
    shown = mask_url(url)
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        path = sqlalchemy.engine.make_url(url).database
        if path and path != ":memory:":
            db = Path(path)
            if not create and not db.is_file():
                raise StorageUnavailable(f"no study database at {db}; submit a study first, or "
                                         "point --storage / $DM_SEARCH_STORAGE at yours")
            try:
                db.parent.mkdir(parents=True, exist_ok=True)
                with sqlite3.connect(db) as con:
                    con.execute("PRAGMA journal_mode=WAL")  # persistent in the file
            except (OSError, sqlite3.Error) as err:
                raise StorageUnavailable(_sqlite_problem(db, err)) from None
        kwargs = {"connect_args": {"timeout": 60}}
    else:
        kwargs = {"pool_pre_ping": True}
    try:
        storage = SealedStorage(url, engine_kwargs=kwargs)
        _OPENED[mask_url(url)] = url
        return storage
    except ImportError as err:
        raise StorageUnavailable(
            f"cannot open {shown}: a database driver is missing ({err}). For PostgreSQL install "
            "dm-search[postgres] and use postgresql+psycopg://..."
        ) from None
    except sqlalchemy.exc.NoSuchModuleError:
        raise StorageUnavailable(
            f"cannot open {shown}: {url.split('://', 1)[0]!r} is not a database kind dm-search "
            "knows; use sqlite:///path/studies.db or postgresql+psycopg://user@host/db"
        ) from None
    except Exception as err:  # sqlalchemy raises many kinds; all mean "cannot open it"
        reason = str(err).splitlines()[0]
        if url in reason:
            reason = reason.replace(url, shown)
        password = sqlalchemy.engine.make_url(url).password if "://" in url else None
        if password:
            reason = reason.replace(str(password), "***")
        raise StorageUnavailable(
            f"cannot open the study database {shown}: {reason}. Check that the server is "
            "running and the URL is right (--storage or $DM_SEARCH_STORAGE)."
        ) from None


def _study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    return [s.study_name for s in storage.get_all_studies()]


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


def counted_trials(study: optuna.Study) -> int:
    """Searched trials that used up budget: everything finished except interrupted ones and
    the references (which n_trials does not count)."""
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state.is_finished() and t.user_attrs.get(TrialKey.STOP) != INTERRUPTED
               and not is_reference(t))


def epochs_trained(study: optuna.Study) -> int:
    """Epochs the study has trained, references and races included: what budget_epochs
    counts."""
    return search_epochs(study) + race_epochs(race(study))


def search_epochs(study: optuna.Study) -> int:
    """Epochs the study's trials have trained, references included (races not)."""
    return sum(int(t.user_attrs.get(TrialKey.EPOCHS) or 0)
               for t in study.get_trials(deepcopy=False))


def race_epochs(record: dict[str, Any] | None) -> int:
    """Epochs the races' runs trained, those of candidates an earlier race had included."""
    record = record or {}
    return sum(int(r.get("epochs") or 0)
               for c in [*(record.get("candidates") or []), *(record.get("earlier") or [])]
               for r in c.get("runs") or [])


def past_curves(study: optuna.Study) -> list[list[float]]:
    """Validation accuracy per epoch of the searched trials already in the study, in order."""
    out = []
    for t in study.get_trials(deepcopy=False):
        hist = trial_history(t)
        curve = [float(h["val_acc"]) for h in hist if h.get("val_acc") is not None]
        if curve and not is_reference(t):
            out.append(curve)
    return out


# ------------------------------------------------------------------ reading the schema
def trial_edf(t: FrozenTrial) -> dict[str, Any] | None:
    """The trial's EDF config; None for a trial that never got one."""
    return _trial_blob(t, TrialKey.EDF)


def trial_config(t: FrozenTrial) -> dict[str, Any]:
    """The resolved trial config (KeyError for a trial that never got one)."""
    cfg = _trial_blob(t, TrialKey.CONFIG)
    if cfg is None:
        raise KeyError(f"trial {t.number} has no config")
    return dict(cfg)


def has_config(t: FrozenTrial) -> bool:
    return _trial_blob(t, TrialKey.CONFIG) is not None


def trial_history(t: FrozenTrial) -> list[dict[str, float]]:
    """Every epoch's metrics, oldest first (empty before the first epoch)."""
    return list(_trial_blob(t, TrialKey.HISTORY) or [])


def trial_final(t: FrozenTrial) -> dict[str, float]:
    """The last epoch's metrics (empty before the first epoch)."""
    hist = trial_history(t)
    return dict(hist[-1] if hist else _trial_blob(t, TrialKey.FINAL) or {})


def trial_epochs(t: FrozenTrial) -> tuple[int | None, int | None]:
    """(epochs completed, epochs of the full budget); None where not recorded yet."""
    return t.user_attrs.get(TrialKey.EPOCHS), t.user_attrs.get(TrialKey.TOTAL)


def duplicate_of(t: FrozenTrial) -> int | None:
    """The number of the trial whose configuration ``t`` repeats (``t`` was not trained)."""
    return t.user_attrs.get(TrialKey.DUPLICATE)


def trial_node(t: FrozenTrial) -> dict[str, Any]:
    """``{"ip", "id"}`` of the Ray node the trial ran on (empty before its first epoch)."""
    return dict(_trial_blob(t, TrialKey.NODE) or {})


def study_spec(study: optuna.Study) -> dict[str, Any]:
    """The spec the study was created with (no storage URL)."""
    return dict(_study_blob(study, StudyKey.SPEC) or {})


def study_identity(study: optuna.Study) -> dict[str, Any]:
    return dict(_study_blob(study, StudyKey.IDENTITY) or {})


def final_stage(study: optuna.Study) -> dict[str, Any] | None:
    return _study_blob(study, StudyKey.FINAL)


def race(study: optuna.Study) -> dict[str, Any] | None:
    """The races' record: each candidate trial with its re-evaluation runs, the rule, and the
    winner once decided (None for a study that never raced)."""
    return _study_blob(study, StudyKey.RACE)


def record_race(study: optuna.Study, record: dict[str, Any]) -> None:
    """Written after every re-evaluation run, so that a resumed study keeps the runs done."""
    _put_study_blob(study, StudyKey.RACE, record)


def study_runs(study: optuna.Study) -> list[dict[str, Any]]:
    """Each submission of the study, oldest first: when, dm-search's and the libraries'
    versions, the git commit, and the driver's machine (empty for an older study)."""
    return list(_study_blob(study, StudyKey.RUNS) or [])


# A study resumed every few minutes keeps its first runs and the latest ones.
MAX_RUNS = 20


def record_run(study: optuna.Study) -> None:
    from dm_search.common import provenance

    runs = study_runs(study)
    runs.append({"started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                 "versions": provenance.versions(), "commit": provenance.git_commit(),
                 "driver": provenance.hardware()})
    if len(runs) > MAX_RUNS:
        runs = runs[:1] + runs[-(MAX_RUNS - 1):]
    _put_study_blob(study, StudyKey.RUNS, runs)


def study_provenance(study: optuna.Study) -> dict[str, Any]:
    """Package version, creation time, dataset fingerprint and measured noise rate."""
    return {"version": study.user_attrs.get(StudyKey.VERSION),
            "created": study.user_attrs.get(StudyKey.CREATED),
            "fingerprint": study.user_attrs.get(StudyKey.FINGERPRINT),
            "noise_rate": study.user_attrs.get(StudyKey.NOISE_RATE)}


# ------------------------------------------------------------------ writing trials
def record_epoch(storage: optuna.storages.BaseStorage, trial_id: int, *, epoch: int,
                 total: int, history: list[dict[str, float]],
                 node: dict[str, Any] | None = None) -> str:
    """A running trial's progress after ``epoch``; returns the stop reason written. Written at
    every epoch: if the scheduler stops the trial here, this is the last moment the trial can
    still be updated (Optuna refuses updates to finished trials)."""
    put = storage.set_trial_user_attr
    reason = FINISHED if epoch >= total else EARLY
    if node is not None:  # the trial's first report (of this attempt)
        _put_trial_blob(storage, trial_id, TrialKey.NODE, node)
        put(trial_id, TrialKey.NODE, node.get("ip"))
        put(trial_id, TrialKey.TOTAL, total)
    if node is not None or reason == FINISHED:  # each write is a commit: only when it changes
        put(trial_id, TrialKey.STOP, reason)
    put(trial_id, TrialKey.EPOCHS, epoch)
    last = history[-1]
    for key in (TrialKey.VAL_ACC, TrialKey.TEST_ACC, TrialKey.MEMORISED):
        if key in last:
            put(trial_id, key, _short(last[key]))
    _put_trial_blob(storage, trial_id, TrialKey.HISTORY, history)
    return reason


def _r6(v: Any) -> Any:
    return round(v, 6) if isinstance(v, float) else v


def _short(v: Any) -> Any:
    # A row of the dashboard shows it: 0.8250 rather than 0.824999988079071.
    return round(v, 4) if isinstance(v, float) and math.isfinite(v) else v


def record_failure(storage: optuna.storages.BaseStorage, trial_id: int, reason: str) -> None:
    """The reason in full as a blob; the row's stop reason cut to SHORT_REASON characters."""
    text = f"failed: {reason}"
    if len(text) > SHORT_REASON:
        _put_trial_blob(storage, trial_id, TrialKey.STOP, text)
        text = text[:SHORT_REASON - 1] + "\u2026"
    storage.set_trial_user_attr(trial_id, TrialKey.STOP, text)


SHORT_REASON = 40


def record_dataset(study: optuna.Study, fingerprint: str | None, noise_rate: float | None,
                   ) -> None:
    study.set_user_attr(StudyKey.FINGERPRINT, fingerprint)
    study.set_user_attr(StudyKey.NOISE_RATE, noise_rate)


def record_final_stage(study: optuna.Study, result: dict[str, Any]) -> None:
    _put_study_blob(study, StudyKey.FINAL, result)

def record_trial_config(trial: Any, cfg: dict[str, Any]) -> None:
    """The resolved trial config and its EDF in both coordinate pairs, on a running trial."""
    from dm_search.edf import EDF

    edf = EDF.from_config(cfg["loss"]["edf"])
    trial = getattr(trial, "ot_trial", trial)  # Ray's wrapper around an Optuna trial
    _put_trial_blob(trial.storage, trial._trial_id, TrialKey.CONFIG, cfg)
    _put_trial_blob(trial.storage, trial._trial_id, TrialKey.EDF, edf.to_config())
    trial.set_user_attr(TrialKey.FAMILY, edf.family)
    trial.set_user_attr(TrialKey.MODE, _r6(edf.mode))
    trial.set_user_attr(TrialKey.SPREAD, _r6(edf.spread))
    trial.set_user_attr(TrialKey.MEAN, round(edf.mean, 6))
    trial.set_user_attr(TrialKey.STD, round(edf.std, 6))
    if cfg["loss"].get("edf_end") is not None:
        end = EDF.from_config(cfg["loss"]["edf_end"])
        ramp = cfg["loss"]["ramp"]
        _put_trial_blob(trial.storage, trial._trial_id, TrialKey.EDF_END, end.to_config())
        trial.set_user_attr(TrialKey.MODE_END, _r6(end.mode))
        trial.set_user_attr(TrialKey.SPREAD_END, _r6(end.spread))
        trial.set_user_attr(TrialKey.MEAN_END, round(end.mean, 6))
        trial.set_user_attr(TrialKey.STD_END, round(end.std, 6))
        trial.set_user_attr(TrialKey.RAMP, f"{ramp['shape']} {ramp['start']:g}-{ramp['end']:g}")


def trial_schedule(t: FrozenTrial) -> dict[str, Any] | None:
    """``{"edf_end", "ramp"}`` of a trial whose EDF moves over training; None for a fixed EDF."""
    loss = (_trial_blob(t, TrialKey.CONFIG) or {}).get("loss") or {}
    if loss.get("edf_end") is None:
        return None
    return {"edf_end": loss["edf_end"], "ramp": loss["ramp"]}


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


def _config_key(cfg: dict[str, Any]) -> str:
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
    key = _config_key(cfg)
    for t in study.get_trials(deepcopy=False):
        if t.number == number or duplicate_of(t) is not None:
            continue
        if t.state == TrialState.FAIL or not has_config(t):
            continue
        if _config_key(trial_config(t)) == key:
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


def _url_of(storage: Any) -> str:
    return str(getattr(storage, "url", "") or getattr(getattr(storage, "_backend", None),
                                                       "url", "the database"))


METRIC_NAME = "val_acc"  # what a trial's value is: the last epoch's clean validation accuracy


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
    if study is not None:
        # The budget may have changed (n_trials, budget_epochs): the record follows the spec.
        _put_study_blob(study, StudyKey.SPEC, spec.stored())
        _name_the_metric(study)  # studies made before it was named
        repaired = repair_interrupted(study)
        record_run(study)
        return Opened(study, False, repaired, counted_trials(study))
    study = optuna.create_study(storage=storage, study_name=spec.name, direction="maximize")
    _name_the_metric(study)
    _put_study_blob(study, StudyKey.SPEC, spec.stored())
    _put_study_blob(study, StudyKey.IDENTITY, spec.identity())
    study.set_user_attr(StudyKey.VERSION, __version__)
    study.set_user_attr(StudyKey.CREATED, dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    record_run(study)
    return Opened(study, True, 0, 0)


# ------------------------------------------------------------------ where a study's files are
LOCATIONS = "locations"  # a study system attribute: its artifacts and Ray output folders


def record_locations(study: optuna.Study, artifacts: Path, ray_output: Path) -> None:
    """Where this run keeps the study's trial artifacts and Ray output (absolute paths), so
    that the dashboard finds them from the database alone."""
    study._storage.set_study_system_attr(study._study_id, LOCATIONS, {
        "artifacts": str(artifacts.resolve()), "ray": str(ray_output.resolve())})


def study_locations(system_attrs: dict[str, Any]) -> dict[str, str]:
    """The recorded folders, from a study's system attributes (empty for an older study)."""
    return dict(system_attrs.get(LOCATIONS) or {})


# ------------------------------------------------------------------ the driver's heartbeat
DRIVER = "driver"  # a study system attribute: which process runs it, and when it last said so
HEARTBEAT_S = 10.0
# A driver silent for this long is gone: several missed beats, so that a busy machine or a
# slow database does not make a live study look dead.
GONE_AFTER_S = 6 * HEARTBEAT_S


def record_driver(study: optuna.Study, state: str, command: str | None = None) -> None:
    """The driver's heartbeat: ``running`` every HEARTBEAT_S, then how it ended
    (``done``, ``interrupted``, ``failed``). ``command`` resumes the study."""
    old = study._storage.get_study_system_attrs(study._study_id).get(DRIVER) or {}
    doc = {"host": socket.gethostname(), "pid": os.getpid(), "state": state,
           "beat": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
           "resume": command or old.get("resume")}
    study._storage.set_study_system_attr(study._study_id, DRIVER, doc)


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


# ------------------------------------------------------------------ reading results
def stop_reason(t: FrozenTrial) -> str:
    if t.state == TrialState.RUNNING:
        return "running"
    if t.state == TrialState.WAITING:
        return "waiting"
    reason = t.user_attrs.get(TrialKey.STOP)
    full = t.system_attrs.get(_BLOB + TrialKey.STOP)
    if reason and full and str(reason).endswith("\u2026") and full.startswith(reason[:-1]):
        return str(full)  # the row shows it cut short (record_failure)
    if reason:
        return str(reason)
    return "failed" if t.state == TrialState.FAIL else t.state.name.lower()


def ran_full_budget(t: FrozenTrial) -> bool:
    """Finished with a value after its whole budget: an early-stopped trial's value is an
    early epoch's, not comparable with finished trials'."""
    return (t.state == TrialState.COMPLETE and t.user_attrs.get(TrialKey.STOP) == FINISHED
            and t.value is not None and math.isfinite(t.value))


def is_eligible(t: FrozenTrial) -> bool:
    """Only searched trials that ran their full budget can be 'best'; references are what the
    best is compared with."""
    return ran_full_budget(t) and not is_reference(t)


def score_window(study: optuna.Study) -> int:
    """Epochs whose validation accuracy make a run's score (1, the last epoch alone, for a
    study recorded before scores were averaged)."""
    return int((study_spec(study).get("race") or {}).get("window") or 1)


def trial_score(t: FrozenTrial, window: int) -> float:
    """A full-budget trial's score: the mean of its last ``window`` epochs' validation
    accuracy (its value where no history is recorded)."""
    from dm_search.study.racing import run_score

    if window <= 1:
        return float(t.value) if t.value is not None else math.nan
    score = run_score([h["val_acc"] for h in trial_history(t) if h.get("val_acc") is not None],
                      window)
    return float(t.value) if not math.isfinite(score) and t.value is not None else score


def ranked_trials(study: optuna.Study, window: int | None = None) -> list[FrozenTrial]:
    """Eligible trials, best score first, one per distinct configuration."""
    window = score_window(study) if window is None else window
    eligible = [t for t in study.get_trials(deepcopy=False) if is_eligible(t)]
    out, seen = [], set()
    for t in sorted(eligible, key=lambda t: (-trial_score(t, window), t.number)):
        key = _config_key(trial_config(t)) if has_config(t) else str(t.number)
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The study's winner: the race's where a race decided one, else the best score of a
    single full-budget run."""
    record = race(study) or {}
    if record.get("winner") is not None:
        for t in study.get_trials(deepcopy=False):
            if t.number == record["winner"] and is_eligible(t):
                return t
    ranked = ranked_trials(study)
    return ranked[0] if ranked else None


def trial_summary(t: FrozenTrial) -> dict[str, Any]:
    edf = trial_edf(t) or {}
    final = trial_final(t)
    return {
        "number": t.number,
        "state": t.state.name,
        "stop_reason": stop_reason(t),
        "value": t.value,
        "edf": edf,
        "schedule": trial_schedule(t),
        "mode": t.user_attrs.get(TrialKey.MODE),
        "spread": t.user_attrs.get(TrialKey.SPREAD),
        "mean": t.user_attrs.get(TrialKey.MEAN),
        "std": t.user_attrs.get(TrialKey.STD),
        "reference": is_reference(t),
        "epochs": t.user_attrs.get(TrialKey.EPOCHS),
        "total_epochs": t.user_attrs.get(TrialKey.TOTAL),
        "node": trial_node(t) or None,
        "test_acc": final.get("test_acc"),
        "memorised": final.get("memorised"),
    }


def reasons_in_words(by_reason: dict[str, int]) -> str:
    """``{"finished": 8, "early-stopped": 12}`` as "8 finished, 12 early-stopped"."""
    order = ["finished", "early-stopped", "duplicate", "failed", "interrupted", "running",
             "waiting"]
    keys = sorted(by_reason, key=lambda k: (order.index(k) if k in order else len(order), k))
    return ", ".join(f"{by_reason[k]} {k}" for k in keys) or "none yet"


def study_summary(study: optuna.Study) -> dict[str, Any]:
    """Progress, best eligible trial and per-family breakdown, from the database only."""
    trials = study.get_trials(deepcopy=False)
    reasons: Counter[str] = Counter()
    failures: Counter[str] = Counter()  # why trials failed (interrupted ones are not failures)
    for t in trials:
        r = stop_reason(t)
        if r.startswith("failed") and r != INTERRUPTED:
            failures[r.removeprefix("failed: ").split(":")[0] or "failed"] += 1
        reasons["interrupted" if r == INTERRUPTED else "failed" if r.startswith("failed") else
                "duplicate" if r.startswith("duplicate") else r] += 1
    families: dict[str, dict[str, Any]] = {}
    for t in trials:
        fam = (trial_edf(t) or {}).get("family")
        if fam is None or is_reference(t):
            continue
        f = families.setdefault(fam, {"trials": 0, "finished": 0, "best_val_acc": None})
        f["trials"] += 1
        if is_eligible(t):
            f["finished"] += 1
            if f["best_val_acc"] is None or t.value > f["best_val_acc"]:
                f["best_val_acc"] = t.value
    best = best_trial(study)
    spec = study_spec(study)
    return {
        "name": study.study_name,
        "n_trials": spec.get("n_trials"),
        "trials": len(trials),
        # Searched trials that ran or run: queued points and interrupted runs (which run
        # again on resume) are not counted against n_trials.
        "searched": sum(1 for t in trials if not is_reference(t)
                        and t.state != TrialState.WAITING
                        and t.user_attrs.get(TrialKey.STOP) != INTERRUPTED),
        "by_reason": dict(reasons),
        "best": trial_summary(best) if best else None,
        "references": [trial_summary(t) for t in trials if is_reference(t)],
        "failures": dict(failures),
        "families": families,
        "race": race(study),
        "final_stage": final_stage(study),
        "driver": driver_state(study),
        **{k: v for k, v in study_provenance(study).items() if k != "noise_rate"},
    }
