"""Storage URLs: where a study's database is, how it is shown without its password, and the
Optuna RDBStorage opened on it (sealed, so that a pickled copy carries no password)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import sqlalchemy
import sqlalchemy.orm

from dm_search.common.errors import ConfigError
from dm_search.storage.loading import EVERYTHING, Subset, load_trials

if TYPE_CHECKING:
    from dm_search.study.spec import StudySpec

__all__ = ["ENV_STORAGE", "SealedStorage", "StorageUnavailable", "artifact_dir", "mask_url",
           "open_storage", "resolve_url"]

ENV_STORAGE = "DM_SEARCH_STORAGE"


class StorageUnavailable(ConfigError):
    """The database cannot be reached or opened."""


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

    @classmethod
    def for_reading(cls, url: str, engine_kwargs: dict[str, Any]) -> SealedStorage:
        """The storage of a command that reads a database that exists: no tables created and
        no schema version checked. What RDBStorage.__init__ sets besides those two steps is set
        here; its schema-version manager (whose alembic import alone is a quarter of a second,
        paid by every `status` and `list`) is made only if asked for (``__getattr__``)."""
        self = cls.__new__(cls)
        self.engine_kwargs = dict(engine_kwargs)
        self.url = self._fill_storage_url_template(url)
        self.skip_compatibility_check = True
        self.heartbeat_interval = self.grace_period = None
        self.heartbeat_stale_trial_callback = self.failed_trial_callback = None
        self.engine = sqlalchemy.engine.create_engine(self.url, **self.engine_kwargs)
        self.scoped_session = sqlalchemy.orm.scoped_session(
            sqlalchemy.orm.sessionmaker(bind=self.engine))
        return self

    def __getattr__(self, name: str) -> Any:
        if name == "_version_manager":  # a reader's, on first use (upgrade, versions, pickle)
            from optuna.storages._rdb.storage import _VersionManager

            manager = _VersionManager(self.url, self.engine, self.scoped_session)
            self.__dict__[name] = manager
            return manager
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __getstate__(self) -> dict[Any, Any]:
        self._version_manager  # noqa: B018 (made, so that the parent's copy can leave it out)
        state = super().__getstate__()
        state["url"] = mask_url(self.url)
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        masked = state["url"]
        env = os.environ.get(ENV_STORAGE, "")
        known = _OPENED.get(masked) or (env if env and mask_url(env) == masked else None)
        super().__setstate__({**state, "url": known or masked})

    # What a trial list reads: everything, except for a reader that needs less and says so
    # (`dm-search dashboard`: loading.DASHBOARD).
    subset: Subset = EVERYTHING

    def _get_trials(self, study_id: int, states: Any, included_trial_ids: set[int],
                    trial_id_greater_than: int) -> list[optuna.trial.FrozenTrial]:
        # Every trial list (the sampler's, status's, the dashboard's) comes through here.
        return load_trials(self.engine, study_id, states, included_trial_ids,
                           trial_id_greater_than, subset=self.subset)


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
    dashboard can read while a study writes. ``create``: False for a command that reads, which
    needs the database to exist (and leaves its tables as they are). Raises
    StorageUnavailable with the URL masked."""
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
        storage = None if create else SealedStorage.for_reading(url, kwargs)
        if storage is not None:
            with storage.engine.connect() as c:  # an unreachable server fails here
                empty = not sqlalchemy.inspect(c).has_table("studies")
        if storage is None or empty:  # a new database gets Optuna's tables, as before
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


def _url_of(storage: Any) -> str:
    return str(getattr(storage, "url", "") or getattr(getattr(storage, "_backend", None),
                                                       "url", "the database"))
