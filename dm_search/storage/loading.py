"""Loading a study's trials with plain SQL rows rather than Optuna's ORM objects.

Optuna builds each trial from mapped objects, one per parameter, value and attribute; for a
study of 10,000 trials that is a few hundred thousand objects and about ten seconds on this
project's reference machine, paid by every `status`, `list`, report, dashboard and first
suggestion. The same rows read as tuples take a fraction of it. ``load_trials`` returns the
very FrozenTrials Optuna's own ``RDBStorage._get_trials`` does (the tests compare them), and
the study's storage uses it for every trial list.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Collection, Container, Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from optuna import distributions
from optuna.storages._rdb import models as om
from optuna.trial import FrozenTrial, TrialState

__all__ = ["EVERYTHING", "Subset", "load_trials"]

_T = om.TrialModel.__table__
_SCALARS = (str, int, float, bool, type(None))


def _local(moment: dt.datetime | None) -> dt.datetime | None:
    # Optuna stores naive UTC and hands out naive local time (as astimezone() would give it:
    # both ask the C library's localtime, this at half the cost).
    if moment is None:
        return None
    return dt.datetime.fromtimestamp(moment.replace(tzinfo=dt.UTC).timestamp())


@dataclass(frozen=True)
class Subset:
    """Which of a trial's rows to read. A reader that needs a few attributes of every trial
    (a study's summary, the dashboard's rows) skips the rest: most of a study's bytes are the
    configs kept as system attributes, and decoding them is most of a full load.

    ``user`` / ``system``: the attribute keys to read (None: all); ``system_skip``: a prefix of
    system keys left out; ``params``, ``intermediate`` and ``dates`` (start and end): whether to
    read those (left out, a trial's dates are None).
    """

    user: frozenset[str] | None = None
    system: frozenset[str] | None = None
    system_skip: str | None = None
    params: bool = True
    intermediate: bool = True
    dates: bool = True


EVERYTHING = Subset()


def _keyed(column: Any, keys: Collection[str] | None) -> list[Any]:
    return [] if keys is None else [column.in_(sorted(keys))]


def load_trials(engine: sa.engine.Engine, study_id: int,
                states: Container[TrialState] | None, included_trial_ids: set[int],
                trial_id_greater_than: int, *, subset: Subset = EVERYTHING) -> list[FrozenTrial]:
    """What ``RDBStorage._get_trials`` returns, with the same arguments; ``subset`` leaves
    out the rows a reader does not need (the trials then hold only the rest)."""
    where = _where(study_id, states, included_trial_ids, trial_id_greater_than)
    with engine.connect() as c:
        studies = om.StudyModel.__table__
        if c.execute(sa.select(studies.c.study_id).where(studies.c.study_id == study_id)
                     ).first() is None:
            raise KeyError(f"No study with study_id {study_id} exists.")
        dates = ((_T.c.datetime_start, _T.c.datetime_complete) if subset.dates else
                 (sa.null(), sa.null()))
        base = c.execute(sa.select(_T.c.trial_id, _T.c.number, _T.c.state, *dates)
                         .where(*where).order_by(_T.c.trial_id)).all()
        if not base:
            return []
        rows = _Rows.read(c, sa.select(_T.c.trial_id).where(*where), subset)
    return [rows.trial(*row) for row in base]


def _where(study_id: int, states: Container[TrialState] | None, included_trial_ids: set[int],
           trial_id_greater_than: int) -> list[Any]:
    included = sorted(i for i in included_trial_ids if i <= trial_id_greater_than)
    where: list[Any] = [_T.c.study_id == study_id]
    if states is not None:
        assert isinstance(states, Iterable)
        where.append(_T.c.state.in_(list(states)))
    if trial_id_greater_than > -1:
        newer = _T.c.trial_id > trial_id_greater_than
        where.append(sa.or_(_T.c.trial_id.in_(included), newer) if included else newer)
    return where


@dataclass
class _Rows:
    """The chosen trials' parameters, values, attributes and steps, by trial id."""

    params: dict[int, list[tuple[str, float, str]]]
    values: dict[int, dict[int, float]]
    user: dict[int, dict[str, Any]]
    system: dict[int, dict[str, Any]]
    steps: dict[int, dict[int, float]]
    known: dict[str, distributions.BaseDistribution] = field(default_factory=dict)

    @classmethod
    def read(cls, c: sa.Connection, chosen: Any, subset: Subset) -> _Rows:
        def rows(model: Any, *cols: str, order: str | None = None, raw: bool = False,
                 where: Iterable[Any] = ()) -> Any:
            table = model.__table__
            query = sa.select(table.c.trial_id, *(table.c[k] for k in cols)).where(
                table.c.trial_id.in_(chosen), *where)
            result = c.execute(query.order_by(table.c[order]) if order else query)
            # Text and integer columns need no conversion: the driver's own tuples are a
            # third of the cost of SQLAlchemy's rows for a study's hundreds of thousands.
            return result.cursor.fetchall() if raw else result

        params: dict[int, list[tuple[str, float, str]]] = {}
        for tid, name, value, dist in rows(om.TrialParamModel, "param_name", "param_value",
                                           "distribution_json", order="param_id"
                                           ) if subset.params else ():
            params.setdefault(tid, []).append((name, value, dist))
        values: dict[int, dict[int, float]] = {}
        for tid, objective, value, kind in rows(om.TrialValueModel, "objective", "value",
                                                "value_type"):
            values.setdefault(tid, {})[objective] = \
                om.TrialValueModel.stored_repr_to_value(value, kind)
        ua, sa_ = om.TrialUserAttributeModel, om.TrialSystemAttributeModel
        user = _attrs(rows(ua, "key", "value_json", raw=True,
                           where=_keyed(ua.__table__.c.key, subset.user)))
        skip = sa_.__table__.c.key
        system = _attrs(rows(sa_, "key", "value_json", raw=True,
                             where=_keyed(skip, subset.system)
                             + ([] if subset.system_skip is None else
                                [sa.not_(skip.startswith(subset.system_skip, autoescape=True))])))
        steps: dict[int, dict[int, float]] = {}
        for tid, step, value, kind in rows(om.TrialIntermediateValueModel, "step",
                                           "intermediate_value", "intermediate_value_type"
                                           ) if subset.intermediate else ():
            steps.setdefault(tid, {})[step] = \
                om.TrialIntermediateValueModel.stored_repr_to_intermediate_value(value, kind)
        return cls(params, values, user, system, steps)

    def _distribution(self, text: str) -> distributions.BaseDistribution:
        # A study's trials share a handful of distributions: parse each JSON text once.
        if text not in self.known:
            self.known[text] = distributions.json_to_distribution(text)
        return self.known[text]

    def trial(self, tid: int, number: int, state: TrialState, start: dt.datetime | None,
              complete: dt.datetime | None) -> FrozenTrial:
        vals = self.values.get(tid)
        ps = self.params.get(tid, [])
        dists = {name: self._distribution(text) for name, _, text in ps}
        return FrozenTrial(
            number=number, state=state, value=None,
            values=[vals[k] for k in sorted(vals)] if vals else None,
            datetime_start=_local(start), datetime_complete=_local(complete),
            params={name: dists[name].to_external_repr(v) for name, v, _ in ps},
            distributions=dists,
            user_attrs=self.user.get(tid, {}), system_attrs=self.system.get(tid, {}),
            intermediate_values=self.steps.get(tid, {}), trial_id=tid)


def _attrs(rows: Iterable[Any]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    seen: dict[str, Any] = {}  # many rows hold the same short value ("finished", a family)
    for tid, key, text in rows:
        if text in seen:
            value = seen[text]
        else:
            value = json.loads(text)
            if isinstance(value, _SCALARS) and len(text) < 64:
                seen[text] = value  # only immutable values are shared between trials
        out.setdefault(tid, {})[key] = value
    return out
