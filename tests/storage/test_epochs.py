"""The epoch table, the epoch writer and the trial loader: each epoch one row written once, in
batches off the caller's thread, nothing lost on a failing database, older studies read and
migrated, and trial lists that are exactly Optuna's."""

from __future__ import annotations

import threading
import time

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from dm_search import storage as st
from dm_search.storage import epochs as ep
from dm_search.storage import recording
from dm_search.storage.keys import put_trial_blob
from dm_search.storage.read import DASHBOARD
from dm_search.study.spec import StudySpec

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study(tmp_path, name="s"):
    spec = StudySpec.model_validate({"name": name, "base": {"data": {"name": "mnist1d"},
                                                            "optim": {"epochs": 60}}})
    storage = st.open_storage(f"sqlite:///{tmp_path}/{name}.db")
    return st.open_study(storage, spec, resume=False).study, storage


def _metrics(e, v=0.5):
    return {"epoch": float(e), "val_acc": v, "test_acc": v - 0.1, "memorised": 0.1}


def test_trials_load_exactly_as_optunas_own_loading_gives_them(tmp_path, make_study):
    url = f"sqlite:///{tmp_path}/m.db"
    study = make_study(url)
    storage = st.open_storage(url, create=False)
    sid = study._study_id
    theirs = optuna.storages.RDBStorage._get_trials
    for states in (None, (TrialState.COMPLETE,), (TrialState.PRUNED, TrialState.FAIL)):
        ours = storage.get_all_trials(sid, deepcopy=False, states=states)
        assert ours == theirs(storage, sid, states, set(), -1) and ours
    # the incremental reads of Optuna's cache: trials after an id, and chosen earlier ones
    assert storage._get_trials(sid, None, {2, 3}, 4) == theirs(storage, sid, None, {2, 3}, 4)
    assert [t.number for t in storage._get_trials(sid, None, set(), 4)] == [4, 5, 6, 7]
    with pytest.raises(KeyError):
        storage.get_all_trials(999)
    storage.subset = DASHBOARD  # as `dm-search dashboard` reads them
    shown = storage.get_all_trials(sid)
    full = theirs(storage, sid, None, set(), -1)
    assert all(not t.intermediate_values for t in shown)
    assert [(t.params, t.user_attrs, t.values) for t in shown] == \
        [(t.params, t.user_attrs, t.values) for t in full]
    assert all(t.system_attrs == {k: v for k, v in f.system_attrs.items()
                                  if not k.startswith("dm_search:")}
               for t, f in zip(shown, full, strict=True))
    assert any(k.startswith("dm_search:") for f in full for k in f.system_attrs)


def test_an_epoch_costs_the_same_statements_at_epoch_2_as_at_epoch_60(tmp_path):
    study, storage = _study(tmp_path)
    trial = study.ask()
    statements: list[str] = []
    sa.event.listen(storage.engine, "before_cursor_execute",
                    lambda conn, cursor, sql, *a: statements.append(sql))
    counts = {}
    for e in range(1, 61):
        statements.clear()
        st.record_epoch(storage, trial._trial_id, epoch=e, total=60, metrics=_metrics(e),
                        value=0.5 + e / 1000, node={"ip": "10.0.0.2", "id": "n"} if e == 1
                        else None)
        counts[e] = len(statements)
    assert counts[2] == counts[60] <= 10, counts
    t = study.trials[0]
    # Optuna keeps the latest value only (its samplers read a stopped trial's last step); the
    # epochs are rows of the epoch table, and no attribute holds a history.
    assert t.intermediate_values == {60: pytest.approx(0.56)}
    assert [h["epoch"] for h in st.trial_history(study, t)] == list(range(1, 61))
    assert st.TrialKey.HISTORY not in str(t.system_attrs)
    assert st.trial_final(t) == _metrics(60)
    study.tell(trial, state=TrialState.PRUNED)  # ranked by its last step's value
    assert study.trials[0].state == TrialState.PRUNED


def test_a_retried_trial_starts_over_even_inside_one_batch(tmp_path):
    study, storage = _study(tmp_path)
    tid = study.ask()._trial_id
    first = [st.EpochReport(tid, study._study_id, e, 60, _metrics(e, 0.1)) for e in (1, 2, 3)]
    again = [st.EpochReport(tid, study._study_id, 1, 60, _metrics(1, 0.9), restart=True),
             st.EpochReport(tid, study._study_id, 2, 60, _metrics(2, 0.9))]
    st.write_reports(storage, first + again)
    assert [h["epoch"] for h in st.trial_history(study, study.trials[0])] == [1, 2]
    st.write_reports(storage, [st.EpochReport(tid, study._study_id, 1, 60, _metrics(1, 0.7),
                                              restart=True)])
    hist = st.trial_history(study, study.trials[0])
    assert [(h["epoch"], h["val_acc"]) for h in hist] == [(1, 0.7)]


def test_an_older_study_reads_and_its_histories_move_into_the_table_on_resume(tmp_path):
    url = f"sqlite:///{tmp_path}/old.db"
    spec = StudySpec.model_validate({"name": "old", "base": {"data": {"name": "mnist1d"}}})
    storage = st.open_storage(url)
    study = st.open_study(storage, spec, resume=False).study
    # as dm-search kept a trial's history before the epoch table: one growing attribute
    with storage.engine.begin() as c:
        c.execute(sa.text("DROP TABLE dm_search_epochs"))
        c.execute(sa.text("DROP TABLE dm_search_schema"))
    ep._HAS_TABLES.clear()
    trial = study.ask()
    hist = [_metrics(e, 0.5 + e / 100) for e in (1, 2, 3)]
    put_trial_blob(storage, trial._trial_id, st.TrialKey.HISTORY, hist)
    trial.set_user_attr(st.TrialKey.STOP, st.FINISHED)
    trial.set_user_attr(st.TrialKey.EPOCHS, 3)
    study.tell(trial, 0.53)
    old = optuna.load_study(study_name="old", storage=st.open_storage(url, create=False))
    (t,) = old.trials
    assert st.trial_history(old, t) == hist and st.trial_final(t) == hist[-1]
    assert st.ranked_trials(old, window=2) == [t]

    opened = st.open_study(st.open_storage(url), spec, resume=True)
    (t,) = opened.study.trials
    assert st.TrialKey.HISTORY not in "".join(t.system_attrs)  # moved out of the trial
    assert st.trial_history(opened.study, t) == hist and st.trial_final(t) == hist[-1]
    with storage.engine.connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM dm_search_epochs")).scalar_one() == 3


def _write_slowly(monkeypatch, seconds=0.05, fail=0):
    monkeypatch.setattr(recording, "RETRY_MAX_S", 0.02)  # the back-off, shortened
    real = ep.write_reports
    calls = {"n": 0, "sizes": []}

    def write(where, reports, **kw):
        calls["n"] += 1
        if calls["n"] <= fail:
            raise sa.exc.OperationalError("INSERT", {}, Exception("database is locked"))
        time.sleep(seconds)
        calls["sizes"].append(len(reports))
        real(where, reports, **kw)

    monkeypatch.setattr(recording, "write_reports", write)
    return calls


def test_the_writer_batches_what_queued_while_it_wrote_and_flush_waits_for_it(tmp_path,
                                                                              monkeypatch):
    study, storage = _study(tmp_path)
    ids = [study.ask()._trial_id for _ in range(10)]
    calls = _write_slowly(monkeypatch)
    writer = st.EpochWriter(storage)
    t0 = time.perf_counter()
    for e in range(1, 61):
        for tid in ids:
            writer.put(st.EpochReport(tid, study._study_id, e, 60, _metrics(e)))
    assert time.perf_counter() - t0 < 0.5  # the caller never waited for the database
    assert writer.flush(timeout=30) and writer.pending == 0
    assert sum(calls["sizes"]) == 600 and len(calls["sizes"]) < 20  # few, large batches
    got = st.histories(study, study.trials)
    assert all([h["epoch"] for h in got[tid]] == list(range(1, 61)) for tid in ids)
    writer.close()
    with pytest.raises(st.RecordingFailed):
        writer.put(st.EpochReport(ids[0], study._study_id, 61, 60, _metrics(61)))


def test_a_full_queue_makes_the_caller_wait_instead_of_growing(tmp_path, monkeypatch):
    study, storage = _study(tmp_path)
    tid = study.ask()._trial_id
    gate = threading.Event()
    real = ep.write_reports
    monkeypatch.setattr(recording, "write_reports",
                        lambda where, reports, **kw: (gate.wait(), real(where, reports, **kw)))
    writer = st.EpochWriter(storage, max_queued=5)
    for e in range(1, 6):
        writer.put(st.EpochReport(tid, study._study_id, e, 60, _metrics(e)))
    late = threading.Thread(target=writer.put,
                            args=(st.EpochReport(tid, study._study_id, 6, 60, _metrics(6)),))
    late.start()
    late.join(timeout=0.5)
    assert late.is_alive() and writer.stats.waits == 1  # held back, not queued
    gate.set()
    late.join(timeout=10)
    writer.close()
    assert len(st.trial_history(study, study.trials[0])) == 6


def test_a_failing_database_is_retried_and_nothing_is_dropped(tmp_path, monkeypatch):
    study, storage = _study(tmp_path)
    tid = study.ask()._trial_id
    _write_slowly(monkeypatch, seconds=0, fail=2)
    said: list[str] = []
    writer = st.EpochWriter(storage, say=said.append)
    for e in range(1, 4):
        writer.put(st.EpochReport(tid, study._study_id, e, 60, _metrics(e)))
    writer.close(timeout=30)
    assert len(st.trial_history(study, study.trials[0])) == 3
    assert len(said) == 2 and "retrying, nothing is dropped" in said[0]
    assert "accepts epoch reports again" in said[1]


def test_closing_on_a_database_that_keeps_refusing_says_how_many_were_lost(tmp_path,
                                                                            monkeypatch):
    study, storage = _study(tmp_path)
    tid = study.ask()._trial_id
    _write_slowly(monkeypatch, fail=10**6)
    writer = st.EpochWriter(storage)
    for e in range(1, 4):
        writer.put(st.EpochReport(tid, study._study_id, e, 60, _metrics(e)))
    with pytest.raises(st.RecordingFailed, match=r"3 epoch report.*database is locked"):
        writer.close(timeout=0.5)


def test_a_report_delivered_twice_replaces_the_first(tmp_path):
    study, storage = _study(tmp_path)
    tid = study.ask()._trial_id
    writer = st.EpochWriter(storage)
    for e, v in ((1, 0.1), (2, 0.2), (2, 0.25)):
        writer.put(st.EpochReport(tid, study._study_id, e, 60, _metrics(e, v)))
        writer.flush()
    writer.close()
    hist = st.trial_history(study, study.trials[0])
    assert [(h["epoch"], h["val_acc"]) for h in hist] == [(1, 0.1), (2, 0.25)]
