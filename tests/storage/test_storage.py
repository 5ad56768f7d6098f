

import datetime as dt
import re

import optuna
import pytest
from optuna.trial import TrialState

from dm_search import storage as st
from dm_search.common.labels import reasons_in_words
from dm_search.study.spec import StudySpec

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _spec(name="s", **kw):
    data = {"name": name, "base": {"data": {"name": "mnist1d"}, "optim": {"epochs": 6}}}
    data.update(kw)
    return StudySpec.model_validate(data)


def test_mask_url_hides_passwords():
    assert st.mask_url("postgresql+psycopg://me:hunter2@db:5432/x") == (
        "postgresql+psycopg://me:***@db:5432/x")
    assert "hunter2" not in st.mask_url("nonsense://me:hunter2@@")


def test_storage_url_precedence(monkeypatch, tmp_path):
    spec = _spec(storage="sqlite:///from-spec.db", study_dir=str(tmp_path))
    monkeypatch.delenv(st.ENV_STORAGE, raising=False)
    assert st.resolve_url(None, _spec(study_dir=str(tmp_path))) == (
        f"sqlite:///{tmp_path}/studies.db")
    assert st.resolve_url(None, spec) == "sqlite:///from-spec.db"
    monkeypatch.setenv(st.ENV_STORAGE, "sqlite:///from-env.db")
    assert st.resolve_url(None, spec) == "sqlite:///from-env.db"
    assert st.resolve_url("sqlite:///cli.db", spec) == "sqlite:///cli.db"


def test_sqlite_storage_uses_wal(tmp_path):
    st.open_storage(f"sqlite:///{tmp_path}/a/studies.db")
    import sqlite3

    with sqlite3.connect(tmp_path / "a" / "studies.db") as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_unreachable_database_is_a_clear_error_without_the_password():
    with pytest.raises(st.StorageUnavailable) as info:
        st.open_storage("postgresql+psycopg://me:hunter2@127.0.0.1:1/db")
    msg = str(info.value)
    assert "hunter2" not in msg and "me:***@127.0.0.1:1" in msg
    assert "Check that the server is running" in msg


def test_pickled_storage_carries_no_password(postgres_url, monkeypatch):
    import pickle

    storage = st.open_storage(postgres_url)
    optuna.create_study(storage=storage, study_name="sealed")
    blob = pickle.dumps(storage)
    assert b"pg-secret-pw" not in blob

    def url():
        return pickle.loads(blob).url

    assert url() == postgres_url  # the process that opened it reconnects (Tune copies it)
    from dm_search.storage import url as storage_url

    monkeypatch.setattr(storage_url, "_OPENED", {})
    monkeypatch.setenv(st.ENV_STORAGE, postgres_url)  # elsewhere only from the environment
    restored = pickle.loads(blob)
    assert restored.url == postgres_url
    assert "sealed" in [s.study_name for s in restored.get_all_studies()]
    monkeypatch.delenv(st.ENV_STORAGE)
    assert url() == st.mask_url(postgres_url)  # no password to be found: none is invented


def test_missing_sqlite_database_for_reading(tmp_path):
    with pytest.raises(st.StorageUnavailable, match="no study database"):
        st.open_storage(f"sqlite:///{tmp_path}/none.db", create=False)
    assert not (tmp_path / "none.db").exists()


def test_create_clash_and_resume(tmp_path):
    storage = st.open_storage(f"sqlite:///{tmp_path}/s.db")
    opened = st.open_study(storage, _spec(), resume=False)
    assert opened.created
    assert opened.study.metric_names == ["val_acc"]  # the dashboard's name for the value
    assert st.study_spec(opened.study)["name"] == "s"
    with pytest.raises(st.StudyClash, match=r"already exists\. Add --resume"):
        st.open_study(storage, _spec(), resume=False)
    with pytest.raises(st.StudyClash, match="different spec"):
        st.open_study(storage, _spec(space={"families": {"dm": {}, "gce": {}}}), resume=True)
    # a bigger budget is the same study
    again = st.open_study(storage, _spec(n_trials=50), resume=True)
    assert not again.created and again.done == 0
    # each submission is on record with what it ran with
    runs = st.study_runs(again.study)
    assert len(runs) == 2 and runs[0]["started"] <= runs[1]["started"]
    assert runs[1]["versions"]["optuna"] == optuna.__version__
    assert runs[1]["driver"]["cores"] and "commit" in runs[1]


def test_a_study_resumed_again_and_again_keeps_its_first_and_latest_runs(tmp_path):
    storage = st.open_storage(f"sqlite:///{tmp_path}/s.db")
    study = st.open_study(storage, _spec(), resume=False).study
    first = st.study_runs(study)[0]
    for _ in range(st.MAX_RUNS + 5):
        st.record_run(study)
    runs = st.study_runs(study)
    assert len(runs) == st.MAX_RUNS and runs[0] == first


def test_provenance_names_the_commit_only_of_a_checkout_of_dm_search(monkeypatch):
    from dm_search.common import provenance

    provenance.git_commit.cache_clear()
    try:
        commit = provenance.git_commit()
        # a clone of the repository, or an installed copy that is not one
        assert commit is None or re.fullmatch(r"[0-9a-f]{12}(-dirty)?", commit), commit
        monkeypatch.setenv(provenance.ENV_COMMIT, "abc123 (image)")
        provenance.git_commit.cache_clear()
        assert provenance.git_commit() == "abc123 (image)"
    finally:
        provenance.git_commit.cache_clear()
    hw = provenance.hardware()
    assert hw["cores"] >= 1 and hw["cpu"] and "gpu" not in hw


def test_resume_of_a_missing_study_lists_the_studies(tmp_path):
    storage = st.open_storage(f"sqlite:///{tmp_path}/s.db")
    st.open_study(storage, _spec("there"), resume=st.Resume.NEW)
    with pytest.raises(st.StudyClash, match=r"no study named 'nope' to resume .*studies there: "
                                            r"there"):
        st.open_study(storage, _spec("nope"), resume=st.Resume.EXISTING)
    assert st.open_study(storage, _spec("nope"), resume=st.Resume.EITHER).created
    assert not st.open_study(storage, _spec("nope"), resume=st.Resume.EITHER).created


def test_heartbeat_tells_a_running_driver_from_a_gone_one(tmp_path, monkeypatch):
    storage = st.open_storage(f"sqlite:///{tmp_path}/s.db")
    study = st.open_study(storage, _spec(), resume=False).study
    assert st.driver_state(study) is None
    st.record_driver(study, "running", "dm-search submit s.yaml --resume")
    state = st.driver_state(study)
    assert state["alive"] and state["state"] == "running" and state["age_s"] < 5
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=st.GONE_AFTER_S + 1)
    monkeypatch.setattr(dt, "datetime", type("Later", (dt.datetime,), {
        "now": classmethod(lambda cls, tz=None: later)}))
    state = st.driver_state(study)
    assert state["state"] == "gone" and not state["alive"]
    assert state["resume"] == "dm-search submit s.yaml --resume"


def test_resume_repairs_interrupted_trials_and_counts_done(tmp_path):
    storage = st.open_storage(f"sqlite:///{tmp_path}/s.db")
    study = st.open_study(storage, _spec(), resume=False).study
    done = study.ask()
    done.set_user_attr(st.TrialKey.STOP, st.FINISHED)
    study.tell(done, 0.8)
    stale = study.ask()  # left RUNNING, as by a killed driver
    stale.suggest_float("dm.mode", 0.0, 0.75)
    opened = st.open_study(storage, _spec(), resume=True)
    assert opened.repaired == 1 and opened.done == 1
    t = opened.study.trials[stale.number]
    assert t.state == TrialState.FAIL and t.user_attrs[st.TrialKey.STOP] == st.INTERRUPTED
    assert opened.study.trials[done.number].state == TrialState.COMPLETE
    # the interrupted configuration waits to run again, and neither counts as searched
    again = opened.study.trials[-1]
    assert again.state == TrialState.WAITING
    assert again.system_attrs["fixed_params"] == t.params
    assert st.study_summary(opened.study)["searched"] == 1


def test_best_trial_never_picks_an_early_stopped_one(tmp_path):
    storage = st.open_storage(f"sqlite:///{tmp_path}/s.db")
    study = st.open_study(storage, _spec(), resume=False).study
    for value, reason in ((0.9, st.EARLY), (0.7, st.FINISHED), (0.6, st.FINISHED)):
        t = study.ask()
        t.set_user_attr(st.TrialKey.STOP, reason)
        t.set_user_attr(st.TrialKey.EDF, {"family": "cce"})
        study.tell(t, value)
    best = st.best_trial(study)
    assert best is not None and best.value == 0.7
    summary = st.study_summary(study)
    assert summary["by_reason"] == {"early-stopped": 1, "finished": 2}
    assert summary["families"]["cce"] == {"trials": 3, "finished": 2, "best_val_acc": 0.7}


def test_find_twin_matches_the_resolved_config_and_skips_duplicates_and_failures(tmp_path):
    storage = st.open_storage(f"sqlite:///{tmp_path}/s.db")
    study = st.open_study(storage, _spec(), resume=False).study
    cfg = {"loss": {"edf": {"family": "dm", "lam": 1.0, "beta": 8.0}}, "threads": 1}
    first = study.ask()
    st.record_trial_config(first, cfg)
    first.set_user_attr(st.TrialKey.EPOCHS, 6)
    study.tell(first, 0.7)
    failed = study.ask()
    st.record_trial_config(failed, {**cfg, "seed": 3})
    study.tell(failed, state=TrialState.FAIL)
    again = study.ask()
    twin = st.find_twin(study, {**cfg, "threads": 4}, again.number)  # threads do not count
    assert twin is not None and twin.number == first.number
    st.record_duplicate(again, twin)
    assert again.study.trials[again.number].intermediate_values == {6: 0.7}
    assert st.find_twin(study, {**cfg, "seed": 3}, 99) is None  # only a failed trial had it
    other = {"loss": {"edf": {"family": "dm", "lam": 1.0, "beta": 9.0}}}
    assert st.find_twin(study, other, 99) is None


def test_a_plain_path_is_an_sqlite_database_and_configs_match_within_rounding(tmp_path):
    url = st.resolve_url(str(tmp_path / "s.db"), None)
    assert url == f"sqlite:///{tmp_path / 's.db'}"
    assert st.mask_url(url) == url  # no password: nothing to hide
    assert st.resolve_url("postgresql+psycopg://u:p@h/db", None).startswith("postgresql")
    a = {"loss": {"edf": {"family": "gce", "q": 0.7}}}
    b = {"loss": {"edf": {"family": "gce", "q": 0.6999999999999991}}}
    assert st.config_key(a) == st.config_key(b)
    assert st.config_key(a) != st.config_key({"loss": {"edf": {"family": "gce", "q": 0.71}}})


def test_reasons_read_as_words():
    assert reasons_in_words({"early-stopped": 12, "finished": 8, "duplicate": 1}) == \
        "8 finished, 12 early-stopped, 1 duplicate"
    assert reasons_in_words({}) == "none yet"


def _drop(data, keys):
    if isinstance(data, dict):
        return {k: _drop(v, keys) for k, v in data.items() if k not in keys}
    return data


NEW_FIELDS = {"edf_end", "ramp", "mode_end", "spread_end", "mean_end", "std_end", "ramp_start",
              "ramp_end"}


def test_a_study_recorded_before_a_field_existed_still_resumes(tmp_path):
    storage = st.open_storage(f"sqlite:///{tmp_path}/s.db")
    spec = _spec()
    study = st.open_study(storage, spec, resume=False).study
    # as a dm-search without emphasis schedules recorded it: none of their (unset) fields
    old = _drop(spec.identity(), NEW_FIELDS)
    assert old != spec.identity()
    st.put_study_blob(study, st.StudyKey.IDENTITY, old)
    assert not st.open_study(storage, spec, resume=True).created
    with pytest.raises(st.StudyClash, match="different spec"):  # a set field still differs
        st.open_study(storage, _spec(space={"families": {"dm": {"mode_end": 0.5}}}),
                      resume=True)
    # and its trials' configs still match the same configuration written today
    cfg = spec.base_config().to_dict()
    assert st.config_key(_drop(cfg, NEW_FIELDS)) == st.config_key(cfg)


def test_a_study_that_kept_its_configs_in_user_attributes_still_reads_and_resumes(tmp_path):
    storage = st.open_storage(f"sqlite:///{tmp_path}/s.db")
    spec = _spec()
    # as dm-search wrote a study before configs and histories moved to system attributes
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    study.set_user_attr(st.StudyKey.SPEC, spec.stored())
    study.set_user_attr(st.StudyKey.IDENTITY, spec.identity())
    study.set_user_attr(st.StudyKey.FINAL, {"seeds": [0]})
    trial = study.ask()
    cfg = spec.base_config().to_dict()
    hist = [{"epoch": e, "val_acc": 0.5 + e / 100, "test_acc": 0.5, "memorised": 0.1}
            for e in (1, 2)]
    for key, value in {st.TrialKey.CONFIG: cfg, st.TrialKey.EDF: cfg["loss"]["edf"],
                       st.TrialKey.HISTORY: hist, st.TrialKey.FINAL: hist[-1],
                       st.TrialKey.NODE: {"ip": "10.0.0.2", "id": "n1"},
                       st.TrialKey.STOP: st.EARLY, st.TrialKey.EPOCHS: 2,
                       st.TrialKey.TOTAL: 6}.items():
        trial.set_user_attr(key, value)
    study.tell(trial, state=TrialState.PRUNED)
    (t,) = study.trials
    assert st.trial_config(t) == cfg and st.trial_edf(t) == cfg["loss"]["edf"]
    assert st.trial_history(study, t) == hist and st.trial_final(t) == hist[-1]
    assert st.trial_node(t) == {"ip": "10.0.0.2", "id": "n1"}
    assert st.study_spec(study)["name"] == "s" and st.final_stage(study) == {"seeds": [0]}
    assert st.find_twin(study, cfg, number=5).number == 0
    assert st.study_summary(study)["families"]["dm"]["trials"] == 1
    opened = st.open_study(storage, spec, resume=True)  # the old identity is still compared
    assert not opened.created
    with pytest.raises(st.StudyClash, match="different spec"):
        st.open_study(storage, _spec(space={"families": {"dm": {}, "gce": {}}}), resume=True)


def test_configs_and_histories_are_kept_out_of_the_user_attributes(tmp_path):
    storage = st.open_storage(f"sqlite:///{tmp_path}/s.db")
    spec = _spec()
    study = st.open_study(storage, spec, resume=False).study
    trial = study.ask()
    cfg = spec.base_config().to_dict()
    st.record_trial_config(trial, cfg)
    hist = []
    for e in range(1, 61):
        hist.append({"epoch": e, "val_acc": 0.3 + e / 1000 + 1e-9, "test_acc": 0.2,
                     "memorised": 0.1})
        st.record_epoch(storage, trial._trial_id, epoch=e, total=60, metrics=hist[-1],
                        node={"ip": "10.0.0.2", "id": "n1"} if e == 1 else None)
    study.tell(trial, hist[-1]["val_acc"])
    (t,) = study.trials
    assert all(not isinstance(v, dict | list) and len(str(v)) <= 40
               for v in t.user_attrs.values()), t.user_attrs
    assert t.user_attrs[st.TrialKey.VAL_ACC] == 0.36 and t.user_attrs["family"] == "dm"
    assert t.user_attrs[st.TrialKey.NODE] == "10.0.0.2"
    assert t.user_attrs[st.TrialKey.STOP] == st.FINISHED
    assert st.trial_history(study, t) == hist and st.trial_final(t) == hist[-1]
    assert st.trial_config(t) == cfg and st.trial_node(t)["id"] == "n1"
    assert all(len(str(v)) <= 200 for v in study.user_attrs.values())
    assert st.study_spec(study)["name"] == "s"


def test_a_long_failure_is_cut_in_the_row_and_whole_in_the_reason(tmp_path):
    storage = st.open_storage(f"sqlite:///{tmp_path}/s.db")
    study = st.open_study(storage, _spec(), resume=False).study
    trial = study.ask()
    why = "TrialCollapsed: the network is dead after epoch 7: " + "x" * 300
    st.record_failure(storage, trial._trial_id, why)
    study.tell(trial, state=TrialState.FAIL)
    row = study.trials[0].user_attrs[st.TrialKey.STOP]
    assert len(row) == st.SHORT_REASON and row.startswith("failed: TrialCollapsed")
    assert st.stop_reason(study.trials[0]) == f"failed: {why}"
    # retried after a lost node, it finishes: the old failure is no longer its reason
    retried = study.ask()
    st.record_failure(storage, retried._trial_id, why)
    st.record_epoch(storage, retried._trial_id, epoch=1, total=1,
                    metrics={"epoch": 1, "val_acc": 0.5}, node={"ip": "a", "id": "b"})
    study.tell(retried, 0.5)
    assert st.stop_reason(study.trials[1]) == st.FINISHED
