"""The study's scheduler and searcher wrappers, driven without a Ray cluster."""

from __future__ import annotations

import time
from types import SimpleNamespace

import optuna
import pytest

from dm_search import storage as st
from dm_search.driver.scheduling import RuleScheduler, StudySearcher
from dm_search.study.spec import StudySpec

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _spec(**kw):
    data = {"name": "s", "base": {"data": {"name": "mnist1d"}, "optim": {"epochs": 6}}}
    data.update(kw)
    return StudySpec.model_validate(data)


def _result(epoch, value):
    return {"epoch": epoch, "val_acc": value, "total_epochs": 6}


def test_references_are_never_stopped_and_past_curves_set_the_bars():
    spec = _spec(scheduler={"name": "rung", "grace_period": 2, "reduction_factor": 2,
                            "min_trials": 2, "trend": 0.0})
    sched = RuleScheduler(spec, past=[[0.5, 0.9, 0.9, 0.9, 0.9, 0.9]])
    ref = SimpleNamespace(trial_id="ref", config={"reference": True})
    new = SimpleNamespace(trial_id="new", config={})
    for e in (1, 2):
        assert sched.on_trial_result(None, ref, _result(e, 0.01)) == "CONTINUE"
    assert sched.on_trial_result(None, new, _result(1, 0.3)) == "CONTINUE"
    assert sched.on_trial_result(None, new, _result(2, 0.3)) == "STOP"


class _Inner:
    """Stands in for OptunaSearch: hands out numbered configs and records what it is told."""

    def __init__(self):
        self.told: list[str] = []
        self.n = 0

    def set_search_properties(self, metric, mode, config, **spec):
        return True

    def suggest(self, trial_id):
        self.n += 1
        return {"trial_config": {}, "optuna_trial": 100 + self.n}

    def on_trial_result(self, trial_id, result):
        pass

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.told.append(trial_id)


def test_searcher_runs_references_first_and_keeps_to_the_epoch_budget(tmp_path):
    # No races here: with them, their reserve is held back from the search (below).
    spec = _spec(baselines=["cce", "gce:q=0.7"], budget_epochs=20, race={"enabled": False})
    storage = st.open_storage(f"sqlite:///{tmp_path}/s.db")
    study = st.open_study(storage, spec, resume=False).study
    inner = _Inner()
    searcher = StudySearcher(inner, spec, study)  # type: ignore[arg-type]
    a, b = searcher.suggest("a"), searcher.suggest("b")
    assert a["reference"] and b["reference"]
    assert [st.trial_edf(t)["family"] for t in st.reference_trials(study)] == ["cce",
                                                                                      "gce"]
    # 12 epochs committed to the two references, 6 more fit, a fourth trial would not
    c = searcher.suggest("c")
    assert c is not None and not c.get("reference")
    assert searcher.suggest("d") is None  # wait: running trials may free budget
    for tid, ref in zip(("a", "b"), st.reference_trials(study), strict=True):
        for e in range(1, 7):
            searcher.on_trial_result(tid, _result(e, 0.5))
        # what the driver's recorder writes while a trial runs
        study._storage.set_trial_user_attr(ref._trial_id, st.TrialKey.STOP, st.FINISHED)
        searcher.on_trial_complete(tid, _result(6, 0.5))
    for e in (1, 2):
        searcher.on_trial_result("c", _result(e, 0.4))
    searcher.on_trial_complete("c", _result(2, 0.4))  # stopped early: 2 epochs used
    assert searcher.used == 14
    assert searcher.suggest("e") is not None  # 14 + 6 <= 20
    assert searcher.suggest("f") is None
    assert inner.told == ["c"]  # references are closed by the searcher itself
    refs = st.reference_trials(study)
    assert [t.state for t in refs] == [optuna.trial.TrialState.COMPLETE] * 2
    assert [t.value for t in refs] == [pytest.approx(0.5)] * 2
    # A resumed study finds its references done and runs none again.
    assert st.missing_references(study, spec) == []
    assert StudySearcher(_Inner(), spec, study).pending == []  # type: ignore[arg-type]
    # With races, 20% of the budget is theirs, as long as the baselines and a trial still fit.
    raced = _spec(baselines=["cce", "gce:q=0.7"], budget_epochs=20)
    assert StudySearcher(_Inner(), raced, study).budget == 18  # type: ignore[arg-type]
    raced = _spec(baselines=["cce"], budget_epochs=100)
    assert StudySearcher(_Inner(), raced, study).budget == 82  # type: ignore[arg-type]


def _nodes(monkeypatch, *resources):
    from dm_search.driver import cluster as runner

    state = {"nodes": list(resources)}
    monkeypatch.setattr(runner.ray, "nodes", lambda: [
        {"Alive": True, "Resources": r} for r in state["nodes"]])
    return state


def test_a_trial_no_node_can_hold_fails_at_once_on_this_machine(monkeypatch):
    from dm_search.driver import cluster as runner

    _nodes(monkeypatch, {"CPU": 2.0})
    said = []
    with pytest.raises(runner.ResourcesUnavailable,
                       match="asks for 1 CPU and 1 GPU per trial, but this machine has 2 CPU "
                             "and 0 GPU"):
        runner.check_resources(_spec(resources={"gpu": 1}), None, said.append)
    with pytest.raises(runner.ResourcesUnavailable, match="64 CPU"):
        runner.check_resources(_spec(resources={"cpu": 64}), None, said.append)
    runner.check_resources(_spec(resources={"cpu": 2}), None, said.append)
    assert said == []


def test_a_cluster_is_waited_for_visibly_and_up_to_a_timeout(monkeypatch):
    from dm_search.driver import cluster as runner

    state = _nodes(monkeypatch, {"CPU": 4.0})
    said = []
    spec = _spec(resources={"cpu": 1, "gpu": 0.5, "wait_s": 0.2})
    with pytest.raises(runner.ResourcesUnavailable, match=r"after 0.2 s: a trial asks for 1 CPU "
                                                          r"and 0.5 GPU"):
        runner.check_resources(spec, "10.0.0.1:6379", said.append, poll_s=0.05)
    assert said[0].startswith("waiting for resources: a trial asks for 1 CPU and 0.5 GPU per "
                              "trial; the largest node of the cluster has 4 CPU and 0 GPU")
    # a node joins (an autoscaler's GPU worker) while the study waits
    monkeypatch.setattr(runner.time, "sleep", lambda s: state["nodes"].append(
        {"CPU": 8.0, "GPU": 1.0}))
    runner.check_resources(spec.model_copy(update={"resources": spec.resources.model_copy(
        update={"wait_s": 5.0})}), "10.0.0.1:6379", said.append)
    assert said[-1] == "resources available: starting"


def test_a_retried_trial_starts_its_history_and_its_budget_over(tmp_path):
    from dm_search.driver.progress import Progress
    from dm_search.driver.recorder import Recorder

    spec = _spec(budget_epochs=100)
    storage = st.open_storage(f"sqlite:///{tmp_path}/s.db")
    study = st.open_study(storage, spec, resume=False).study
    trial = study.ask()
    writer = st.EpochWriter(storage)
    recorder = Recorder(study, Progress(total=1), 1, lambda msg: None, None, writer=writer)
    ray_trial = SimpleNamespace(config={"optuna_trial": trial.number}, trial_id="t")
    searcher = StudySearcher(_Inner(), spec, study, writer=writer)  # type: ignore[arg-type]
    searcher.progress["t"] = (0, 0)
    # three epochs, then its node is lost and Tune (max_failures) runs it again from epoch 1
    for e in (1, 2, 3, 1, 2):
        result = {**_result(e, 0.1 * e), "total_epochs": 6}
        recorder.on_trial_result(0, [], ray_trial, result)
        searcher.on_trial_result("t", result)
    writer.close()
    history = st.trial_history(study, study.trials[0])
    assert [h["epoch"] for h in history] == [1, 2]
    assert searcher.used == 5  # every epoch trained counts against the budget


@pytest.mark.parametrize("error, raised", [(RuntimeError("the driver broke"), RuntimeError),
                                           (KeyboardInterrupt(), "StudyInterrupted")])
def test_a_driver_that_fails_or_is_stopped_writes_its_queued_epochs_first(tmp_path, monkeypatch,
                                                                          error, raised):
    """Epochs still queued when the driver fails (or is stopped) are written before it exits,
    and before the stopped run's trials are marked interrupted."""
    from dm_search.driver import runner
    from dm_search.driver.signals import StudyInterrupted
    from dm_search.storage import epochs

    url = f"sqlite:///{tmp_path}/s.db"
    spec = _spec().model_copy(update={"study_dir": str(tmp_path)})
    monkeypatch.setattr(runner, "_check_before_ray", lambda *a: None)
    monkeypatch.setattr(runner, "connect_ray", lambda *a, **k: None)
    monkeypatch.setattr(runner, "check_resources", lambda *a: None)
    slow = epochs.write_reports

    def write_slowly(where, reports, **kw):  # a slow database: the queue holds most of them
        time.sleep(0.2)
        slow(where, reports, **kw)

    monkeypatch.setattr("dm_search.storage.recording.write_reports", write_slowly)
    seen = {}

    def drive(spec, study, storage, opened, stop, say, tracker, writer):
        trial = study.ask()
        seen["trial"] = trial.number
        for e in range(1, 31):
            writer.put(st.EpochReport(trial._trial_id, study._study_id, e, 30,
                                      {"epoch": e, "val_acc": 0.5}, value=0.5))
        assert writer.pending > 10
        raise error

    monkeypatch.setattr(runner, "_drive", drive)
    expected = StudyInterrupted if raised == "StudyInterrupted" else raised
    with pytest.raises(expected):
        runner.run_study(spec, storage_url=url, say=lambda _: None)
    study = optuna.load_study(study_name=spec.name, storage=st.open_storage(url))
    (t,) = [t for t in study.trials if t.number == seen["trial"]]
    assert [h["epoch"] for h in st.trial_history(study, t)] == list(range(1, 31))
    assert t.user_attrs[st.TrialKey.EPOCHS] == 30 and t.intermediate_values == {30: 0.5}
    if expected is StudyInterrupted:  # then marked interrupted, after its epochs
        assert t.user_attrs[st.TrialKey.STOP] == st.INTERRUPTED
