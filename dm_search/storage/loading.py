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
from collections.abc import Container, Iterable
from typing import Any

import sqlalchemy as sa
from optuna import distributions
from optuna.storages._rdb import models as om
from optuna.trial import FrozenTrial, TrialState

__all__ = ["load_trials"]

_T = om.TrialModel.__table__
_SCALARS = (str, int, float, bool, type(None))


def _local(moment: dt.datetime | None) -> dt.datetime | None:
    # Optuna stores naive UTC and hands out naive local time.
    if moment is None:
        return None
    return moment.replace(tzinfo=dt.UTC).astimezone().replace(tzinfo=None)


def load_trials(engine: sa.engine.Engine, study_id: int,
                states: Container[TrialState] | None, included_trial_ids: set[int],
                trial_id_greater_than: int, *, intermediate: bool = True) -> list[FrozenTrial]:
    """What ``RDBStorage._get_trials`` returns, with the same arguments (``intermediate``:
    False leaves the intermediate values out)."""
    included = sorted(i for i in included_trial_ids if i <= trial_id_greater_than)
    where: list[Any] = [_T.c.study_id == study_id]
    if states is not None:
        assert isinstance(states, Iterable)
        where.append(_T.c.state.in_(list(states)))
    if trial_id_greater_than > -1:
        newer = _T.c.trial_id > trial_id_greater_than
        where.append(sa.or_(_T.c.trial_id.in_(included), newer) if included else newer)
    chosen = sa.select(_T.c.trial_id).where(*where)
    with engine.connect() as c:
        studies = om.StudyModel.__table__
        if c.execute(sa.select(studies.c.study_id).where(studies.c.study_id == study_id)
                     ).first() is None:
            raise KeyError(f"No study with study_id {study_id} exists.")
        base = c.execute(sa.select(_T.c.trial_id, _T.c.number, _T.c.state,
                                   _T.c.datetime_start, _T.c.datetime_complete)
                         .where(*where).order_by(_T.c.trial_id)).all()
        if not base:
            return []

        def rows(model: Any, *cols: str, order: str | None = None, raw: bool = False) -> Any:
            table = model.__table__
            query = sa.select(table.c.trial_id, *(table.c[k] for k in cols)).where(
                table.c.trial_id.in_(chosen))
            result = c.execute(query.order_by(table.c[order]) if order else query)
            # Text and integer columns need no conversion: the driver's own tuples are a
            # third of the cost of SQLAlchemy's rows for a study's hundreds of thousands.
            return result.cursor.fetchall() if raw else result

        params: dict[int, list[tuple[str, float, str]]] = {}
        for tid, name, value, dist in rows(om.TrialParamModel, "param_name", "param_value",
                                           "distribution_json", order="param_id"):
            params.setdefault(tid, []).append((name, value, dist))
        values: dict[int, dict[int, float]] = {}
        for tid, objective, value, kind in rows(om.TrialValueModel, "objective", "value",
                                                "value_type"):
            values.setdefault(tid, {})[objective] = \
                om.TrialValueModel.stored_repr_to_value(value, kind)
        user = _attrs(rows(om.TrialUserAttributeModel, "key", "value_json", raw=True))
        system = _attrs(rows(om.TrialSystemAttributeModel, "key", "value_json", raw=True))
        steps: dict[int, dict[int, float]] = {}
        for tid, step, value, kind in rows(om.TrialIntermediateValueModel, "step",
                                           "intermediate_value", "intermediate_value_type"
                                           ) if intermediate else ():
            steps.setdefault(tid, {})[step] = \
                om.TrialIntermediateValueModel.stored_repr_to_intermediate_value(value, kind)

    known: dict[str, distributions.BaseDistribution] = {}

    def dist_of(text: str) -> distributions.BaseDistribution:
        if text not in known:
            known[text] = distributions.json_to_distribution(text)
        return known[text]

    out = []
    for tid, number, state, start, complete in base:
        vals = values.get(tid)
        ps = params.get(tid, [])
        dists = {name: dist_of(text) for name, _, text in ps}
        out.append(FrozenTrial(
            number=number, state=state, value=None,
            values=[vals[k] for k in sorted(vals)] if vals else None,
            datetime_start=_local(start), datetime_complete=_local(complete),
            params={name: dists[name].to_external_repr(v) for name, v, _ in ps},
            distributions=dists,
            user_attrs=user.get(tid, {}), system_attrs=system.get(tid, {}),
            intermediate_values=steps.get(tid, {}), trial_id=tid))
    return out


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
