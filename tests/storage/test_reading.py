"""Reading a study back quickly: a summary that reads a few attributes of every trial and
gives what the whole trials give, scores averaged in the database, the dashboard's subset of
each trial, and a reading command that opens the database without Optuna's migration tool."""

from __future__ import annotations

import math
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from dm_search import storage as st
from dm_search.storage import ranking
from dm_search.storage.keys import put_trial_blob

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _rich_study(url, make_study):
    """The shared made study, plus what a summary must tell apart: a duplicate, an
    interrupted run, a long failure cut in its row, and a race that chose a winner."""
    study = make_study(url, race={"window": 3})
    storage = study._storage
    twin = study.trials[1]
    dup = study.ask()
    st.record_duplicate(dup, twin)
    study.tell(dup, twin.value)
    gone = study.ask()
    st.record_epoch(storage, gone._trial_id, epoch=1, total=6, metrics={"val_acc": 0.5})
    st.record_failure(storage, gone._trial_id, "interrupted")
    study.tell(gone, state=TrialState.FAIL)
    long = study.ask()
    st.record_failure(storage, long._trial_id, "ValueError: " + "x" * 3000)
    study.tell(long, state=TrialState.FAIL)
    study.ask()  # still running
    return study


@pytest.mark.parametrize("winner", [None, 3])
def test_a_summary_from_a_few_attributes_is_the_summary_of_the_whole_trials(
        tmp_path, make_study, monkeypatch, winner):
    study = _rich_study(f"sqlite:///{tmp_path}/s.db", make_study)
    if winner is not None:
        st.record_race(study, {"winner": winner, "candidates": []})
    light = st.summary_trials(study)
    assert len(light) == len(study.trials)
    assert not any(st.has_config(t) or t.params for t in light)  # the configs stay unread
    fast = st.study_summary(study)
    monkeypatch.setattr(ranking, "summary_trials", lambda s: s.get_trials(deepcopy=False))
    assert fast == st.study_summary(study)
    assert fast["best"]["number"] == (winner if winner is not None else 1)
    assert fast["best"]["edf"]["family"] == ("dm" if winner is None else "gce")
    assert fast["best"]["node"]
    assert fast["references"] and fast["references"][0]["edf"] == {"family": "cce"}
    assert fast["by_reason"]["duplicate"] == 1 and fast["by_reason"]["interrupted"] == 1
    assert fast["by_reason"]["running"] == 1
    assert fast["failures"] == {"TrialDiverged": 1, "ValueError": 1}


def test_scores_are_the_mean_of_the_last_epochs_averaged_in_the_database(tmp_path,
                                                                          make_study):
    study = make_study(f"sqlite:///{tmp_path}/s.db")
    storage = study._storage
    short = study.ask()  # a trial whose last epoch is not the others': its own window
    for e, v in enumerate([0.1, 0.2, math.nan, 0.4], start=1):
        st.record_epoch(storage, short._trial_id, epoch=e, total=4, metrics={"val_acc": v})
    old = study.ask()  # an older study's trial: its history an attribute, no epoch rows
    put_trial_blob(storage, old._trial_id, st.TrialKey.HISTORY,
                   [{"val_acc": v} for v in (0.3, 0.5, None, 0.9)])
    empty = study.ask()
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    means = st.recent_mean_val_acc(study, list(trials.values()), 3)
    assert means[trials[0]._trial_id] == pytest.approx((0.75 + 0.78 + 0.80) / 3)
    assert means[short._trial_id] == pytest.approx((0.2 + 0.4) / 2)  # the NaN epoch left out
    assert means[old._trial_id] == pytest.approx((0.5 + 0.9) / 2)
    assert math.isnan(means[empty._trial_id])
    assert st.trial_score(study, trials[0], 3) == pytest.approx(means[trials[0]._trial_id])
    assert st.trial_score(study, trials[0], 1) == trials[0].value


def test_a_reading_command_opens_the_database_without_optunas_migration_tool(tmp_path,
                                                                             make_study):
    url = f"sqlite:///{tmp_path}/s.db"
    make_study(url)
    code = f"""
import pickle, sys
from dm_search import storage as st
store = st.open_storage({url!r}, create=False)
assert [s.study_name for s in store.get_all_studies()] == ["made"]
assert len(store.get_all_trials(store.get_study_id_from_name("made"))) == 8
assert "alembic" not in sys.modules, "a reader imported alembic"
assert pickle.loads(pickle.dumps(store)).get_all_studies()[0].study_name == "made"
print(store.get_current_version())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == optuna.storages.RDBStorage(url).get_current_version()
    # A database file without Optuna's tables reads as one without studies, as before.
    import sqlite3

    sqlite3.connect(tmp_path / "empty.db").close()
    assert st.open_storage(f"sqlite:///{tmp_path}/empty.db", create=False
                           ).get_all_studies() == []
