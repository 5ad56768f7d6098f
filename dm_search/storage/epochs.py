"""Every epoch of every trial, in a table of dm-search's own beside Optuna's.

Optuna loads a trial with all its attributes and intermediate values, and a sampler loads
every trial of the study: a per-epoch history kept there is read again at each suggestion and
by every `status`, and rewriting it at each epoch grows with the square of a trial's length.
Here each epoch is one row written once, read only by what needs curves. Optuna's own tables
keep what its samplers and the dashboard's rows read: a trial's latest epoch (its last
intermediate value, the epochs completed, the last metrics).

A report reaches the database in ``write_reports``: one transaction for a whole batch of
them, whatever the trials' lengths. Studies recorded before this table kept each history as
one trial attribute; ``migrate_histories`` moves a study's into the table (run when a study
is resumed), and the readers look in both.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.storages._rdb import models as om
from optuna.trial import FrozenTrial

from dm_search.storage.keys import _BLOB, EARLY, FINISHED, TrialKey, trial_blob

__all__ = ["EPOCHS", "SCHEMA_VERSION", "EpochReport", "engine_of", "ensure_tables", "histories",
           "migrate_histories", "recent_mean_val_acc", "study_val_curves", "trial_history",
           "write_reports"]

SCHEMA_VERSION = 1  # of dm-search's own tables; bump with a migration in ensure_tables

_META = sa.MetaData()
EPOCHS = sa.Table(
    "dm_search_epochs", _META,
    sa.Column("trial_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("epoch", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("study_id", sa.Integer, nullable=False, index=True),
    # Its own column (the rest is JSON): ranking and the stopping rule read only this.
    sa.Column("val_acc", sa.Float, nullable=True),
    sa.Column("metrics", sa.Text, nullable=False),
)
_SCHEMA = sa.Table(
    "dm_search_schema", _META,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)

# Engines (by id) known to hold the tables: asked once per process, not at every read.
_HAS_TABLES: dict[int, bool] = {}
_CHUNK = 900  # ids per IN (...): under every database's limit on bound parameters


@dataclass(frozen=True)
class EpochReport:
    """One epoch of one running trial, as the driver received it."""

    trial_id: int
    study_id: int
    epoch: int
    total: int
    metrics: dict[str, float]
    value: float | None = None  # Optuna's intermediate value (None: not a searched trial)
    node: dict[str, Any] | None = None  # where it runs: given with a trial's first report
    restart: bool = False  # a retried trial starting over: its later epochs are replaced
    reported_at: float | None = None  # the worker's clock (time.time()) when it was sent


# ------------------------------------------------------------------ the tables
def engine_of(where: Any) -> sa.engine.Engine | None:
    """The SQLAlchemy engine behind a study, a storage or Optuna's cache around one."""
    storage = getattr(where, "_storage", where)
    storage = getattr(storage, "_backend", storage)  # optuna's _CachedStorage
    return getattr(storage, "engine", None)


def ensure_tables(engine: sa.engine.Engine) -> None:
    """Create dm-search's tables where they are missing (a new database, or one written by an
    older dm-search); a no-op once they are there."""
    if _HAS_TABLES.get(id(engine)):
        return
    try:
        _META.create_all(engine, checkfirst=True)
    except sa.exc.SQLAlchemyError:
        # Another process created them between the check and the CREATE: fine if they exist.
        if not sa.inspect(engine).has_table(EPOCHS.name):
            raise
    with engine.begin() as c:
        row = c.execute(sa.select(_SCHEMA.c.version).where(_SCHEMA.c.name == "epochs")).first()
        if row is None:
            with contextlib.suppress(sa.exc.IntegrityError):  # a concurrent process wrote it
                c.execute(sa.insert(_SCHEMA).values(name="epochs", version=SCHEMA_VERSION))
        elif row[0] > SCHEMA_VERSION:
            raise RuntimeError(
                f"this study database was written by a newer dm-search (its epoch table is "
                f"version {row[0]}, this one knows {SCHEMA_VERSION}): upgrade dm-search")
    _HAS_TABLES[id(engine)] = True


def _has_table(engine: sa.engine.Engine | None) -> bool:
    if engine is None:
        return False
    known = _HAS_TABLES.get(id(engine))
    if known is None:
        known = sa.inspect(engine).has_table(EPOCHS.name)
        if known:  # a database without it may get it later (a study resumed beside)
            _HAS_TABLES[id(engine)] = True
    return known


# ------------------------------------------------------------------ writing
def _finite(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


def _short(v: Any) -> Any:
    # A row of the dashboard shows it: 0.8250 rather than 0.824999988079071.
    return round(v, 4) if isinstance(v, float) and math.isfinite(v) else v


def write_reports(where: Any, reports: Sequence[EpochReport], *, exact: bool = False) -> None:
    """Record a batch of epoch reports in one transaction: a row per epoch in the epoch table,
    and per trial (its latest report in the batch) the attributes Optuna shows and reads. A
    batch costs a handful of statements whatever its size and the trials' lengths.
    ``exact``: a restart replaces only its own epoch (a report delivered twice), not the
    ones after it."""
    if not reports:
        return
    engine = engine_of(where)
    assert engine is not None, "epoch reports need a database storage"
    ensure_tables(engine)
    latest: dict[int, EpochReport] = {}
    first: dict[int, EpochReport] = {}
    for r in reports:
        latest[r.trial_id] = r
        if r.node is not None:
            first[r.trial_id] = r
    user: dict[tuple[int, str], Any] = {}
    system: dict[tuple[int, str], Any] = {}
    for tid, r in first.items():
        system[tid, _BLOB + TrialKey.NODE] = r.node
        user[tid, TrialKey.NODE] = (r.node or {}).get("ip")
        user[tid, TrialKey.TOTAL] = r.total
        user[tid, TrialKey.STOP] = EARLY
    for tid, r in latest.items():
        if r.epoch >= r.total:
            user[tid, TrialKey.STOP] = FINISHED
        user[tid, TrialKey.EPOCHS] = r.epoch
        for key in (TrialKey.VAL_ACC, TrialKey.TEST_ACC, TrialKey.MEMORISED):
            if key in r.metrics:
                user[tid, key] = _short(r.metrics[key])
        system[tid, _BLOB + TrialKey.FINAL] = r.metrics
    rows: dict[tuple[int, int], dict[str, Any]] = {}
    for r in reports:
        if r.restart and not exact:  # a retried trial starting over drops its later epochs
            for old in [k for k in rows if k[0] == r.trial_id and k[1] >= r.epoch]:
                del rows[old]
        rows[r.trial_id, r.epoch] = {
            "trial_id": r.trial_id, "epoch": r.epoch, "study_id": r.study_id,
            "val_acc": _finite(r.metrics.get("val_acc")), "metrics": json.dumps(r.metrics)}
    with engine.begin() as c:
        for r in reports:
            if r.restart:
                c.execute(sa.delete(EPOCHS).where(
                    EPOCHS.c.trial_id == r.trial_id,
                    EPOCHS.c.epoch == r.epoch if exact else EPOCHS.c.epoch >= r.epoch))
        c.execute(sa.insert(EPOCHS), list(rows.values()))
        _put_attrs(c, om.TrialUserAttributeModel.__table__, "trial_user_attribute_id", user)
        _put_attrs(c, om.TrialSystemAttributeModel.__table__, "trial_system_attribute_id",
                   system)
        _put_intermediate(c, [r for r in latest.values() if r.value is not None])


def _put_attrs(c: sa.Connection, table: sa.Table, pk: str,
               items: dict[tuple[int, str], Any]) -> None:
    """Upsert trial attributes as Optuna stores them (JSON text), in three statements."""
    if not items:
        return
    tids = sorted({tid for tid, _ in items})
    keys = sorted({k for _, k in items})
    have: dict[tuple[int, str], int] = {}
    for chunk in _chunks(tids):
        for row in c.execute(sa.select(table.c[pk], table.c.trial_id, table.c.key).where(
                table.c.trial_id.in_(chunk), table.c.key.in_(keys))):
            have[row[1], row[2]] = row[0]
    updates = [{"b_id": have[k], "b_value": json.dumps(v)} for k, v in items.items()
               if k in have]
    inserts = [{"trial_id": k[0], "key": k[1], "value_json": json.dumps(v)}
               for k, v in items.items() if k not in have]
    if updates:
        c.execute(sa.update(table).where(table.c[pk] == sa.bindparam("b_id"))
                  .values(value_json=sa.bindparam("b_value")), updates)
    if inserts:
        c.execute(sa.insert(table), inserts)


def _put_intermediate(c: sa.Connection, reports: list[EpochReport]) -> None:
    """Each trial's latest intermediate value replaces its earlier ones: Optuna's samplers
    read a stopped trial's last step, and the curves are in the epoch table."""
    if not reports:
        return
    table = om.TrialIntermediateValueModel.__table__
    for chunk in _chunks([r.trial_id for r in reports]):
        c.execute(sa.delete(table).where(table.c.trial_id.in_(chunk)))
    rows = []
    for r in reports:
        value, kind = om.TrialIntermediateValueModel.intermediate_value_to_stored_repr(
            float(r.value))  # type: ignore[arg-type]
        rows.append({"trial_id": r.trial_id, "step": r.epoch, "intermediate_value": value,
                     "intermediate_value_type": kind})
    c.execute(sa.insert(table), rows)


def _chunks(ids: Sequence[int]) -> Iterable[list[int]]:
    ids = list(ids)
    for i in range(0, len(ids), _CHUNK):
        yield ids[i:i + _CHUNK]


# ------------------------------------------------------------------ reading
def histories(where: Any, trials: Iterable[FrozenTrial]) -> dict[int, list[dict[str, float]]]:
    """Every epoch's metrics of each trial, oldest first, by trial id (empty before its first
    epoch). One query per few hundred trials; a study recorded before the epoch table is read
    from the attribute it kept instead."""
    trials = list(trials)
    out: dict[int, list[dict[str, float]]] = {t._trial_id: [] for t in trials}
    engine = engine_of(where)
    if _has_table(engine) and trials:
        assert engine is not None
        with engine.connect() as c:
            for chunk in _chunks(sorted(out)):
                for tid, metrics in c.execute(
                        sa.select(EPOCHS.c.trial_id, EPOCHS.c.metrics)
                        .where(EPOCHS.c.trial_id.in_(chunk))
                        .order_by(EPOCHS.c.trial_id, EPOCHS.c.epoch)):
                    out[tid].append(json.loads(metrics))
    for t in trials:
        if not out[t._trial_id]:
            out[t._trial_id] = list(trial_blob(t, TrialKey.HISTORY) or [])
    return out


def trial_history(where: Any, t: FrozenTrial) -> list[dict[str, float]]:
    """Every epoch's metrics of one trial, oldest first (empty before its first epoch)."""
    return histories(where, [t])[t._trial_id]


def recent_mean_val_acc(where: Any, trials: Sequence[FrozenTrial], window: int
                        ) -> dict[int, float]:
    """The mean validation accuracy of each trial's last ``window`` epochs (those recorded
    with one), by trial id; NaN where there is none. What a score needs, averaged in the
    database: a summary of 10,000 trials otherwise reads 50,000 rows."""
    out = {t._trial_id: math.nan for t in trials}
    engine = engine_of(where)
    by_last: dict[int, list[int]] = {}
    for t in trials:
        by_last.setdefault(int(t.user_attrs.get(TrialKey.EPOCHS) or 0), []).append(t._trial_id)
    if _has_table(engine) and trials:
        assert engine is not None
        with engine.connect() as c:
            for last, ids in by_last.items():
                for chunk in _chunks(sorted(ids)):
                    out.update(c.execute(
                        sa.select(EPOCHS.c.trial_id, sa.func.avg(EPOCHS.c.val_acc))
                        .where(EPOCHS.c.trial_id.in_(chunk), EPOCHS.c.epoch > last - window,
                               EPOCHS.c.val_acc.is_not(None))
                        .group_by(EPOCHS.c.trial_id)).cursor.fetchall())
    for t in trials:
        if math.isnan(out[t._trial_id]):  # none in the table: an older study's attribute
            vals = [float(h["val_acc"]) for h in (trial_blob(t, TrialKey.HISTORY) or [])[-window:]
                    if _finite(h.get("val_acc")) is not None]
            out[t._trial_id] = sum(vals) / len(vals) if vals else math.nan
    return {tid: float(v) for tid, v in out.items()}


def study_val_curves(study: optuna.Study, trials: Sequence[FrozenTrial]
                     ) -> dict[int, list[float]]:
    """Validation accuracy per epoch of ``trials`` (all of one study), by trial id."""
    out: dict[int, list[float]] = {t._trial_id: [] for t in trials}
    engine = engine_of(study)
    if _has_table(engine) and trials:
        assert engine is not None
        with engine.connect() as c:
            for tid, val in c.execute(
                    sa.select(EPOCHS.c.trial_id, EPOCHS.c.val_acc)
                    .where(EPOCHS.c.study_id == study._study_id)
                    .order_by(EPOCHS.c.trial_id, EPOCHS.c.epoch)):
                if tid in out and val is not None:
                    out[tid].append(float(val))
    for t in trials:
        if not out[t._trial_id]:
            out[t._trial_id] = [float(h["val_acc"]) for h in trial_blob(t, TrialKey.HISTORY)
                                or [] if h.get("val_acc") is not None]
    return out


# ------------------------------------------------------------------ older studies
def migrate_histories(study: optuna.Study) -> int:
    """Move the histories a study kept as trial attributes (dm-search before the epoch table)
    into the table, in one transaction; returns how many trials moved."""
    engine = engine_of(study)
    if engine is None:
        return 0
    ensure_tables(engine)
    attrs = om.TrialSystemAttributeModel.__table__
    trials = om.TrialModel.__table__
    with engine.begin() as c:
        found = c.execute(
            sa.select(attrs.c.trial_system_attribute_id, attrs.c.trial_id, attrs.c.value_json)
            .join(trials, trials.c.trial_id == attrs.c.trial_id)
            .where(trials.c.study_id == study._study_id,
                   attrs.c.key == _BLOB + TrialKey.HISTORY)).all()
        if not found:
            return 0
        moved = {row[1] for row in found}
        have = {tid for chunk in _chunks(sorted(moved)) for (tid,) in c.execute(
            sa.select(EPOCHS.c.trial_id).where(EPOCHS.c.trial_id.in_(chunk)).distinct())}
        rows, finals = [], []
        for _, tid, value in found:
            hist = json.loads(value) or []
            if hist:
                finals.append({"trial_id": tid, "key": _BLOB + TrialKey.FINAL,
                               "value_json": json.dumps(hist[-1])})
            if tid in have:
                continue
            rows += [{"trial_id": tid, "epoch": int(h.get("epoch") or e),
                      "study_id": study._study_id, "val_acc": _finite(h.get("val_acc")),
                      "metrics": json.dumps(h)} for e, h in enumerate(hist, 1)]
        if rows:
            c.execute(sa.insert(EPOCHS), rows)
        # The last epoch stays on the trial (as new trials keep it), the rest moves out.
        for chunk in _chunks(sorted(moved)):
            c.execute(sa.delete(attrs).where(attrs.c.trial_id.in_(chunk),
                                             attrs.c.key == _BLOB + TrialKey.FINAL))
        if finals:
            c.execute(sa.insert(attrs), finals)
        for chunk in _chunks([row[0] for row in found]):
            c.execute(sa.delete(attrs).where(attrs.c.trial_system_attribute_id.in_(chunk)))
    return len(moved)
