"""Tracking a study in MLflow and TensorBoard, read back with their own readers."""

from __future__ import annotations

import optuna
import pytest

from dm_search import storage as st
from dm_search.results import tracking
from dm_search.results.tracking import Tracking, missing_extras, open_tracking, trial_params

CFG = {
    "loss": {"edf": {"family": "dm", "lam": 0.5, "beta": 8.0},
             "edf_end": {"family": "dm", "lam": 1.0, "beta": 8.0},
             "normalise": "batch", "eps": 5e-7},
    "optim": {"lr": 0.01, "epochs": 3},
}


def test_a_trials_params_hold_its_edf_in_both_coordinate_pairs_and_what_was_searched():
    p = trial_params(CFG, ["optim.lr"])
    assert p["edf.family"] == "dm" and p["edf.lam"] == 0.5 and p["edf.beta"] == 8.0
    assert p["edf.mode"] == pytest.approx(1 / 3) and p["edf.spread"] == 8.0
    assert 0 < p["edf.mean"] < 1 and 0 < p["edf.std"] < 1
    assert p["edf_end.mode"] == pytest.approx(0.5)  # where the schedule ends
    assert p["optim.lr"] == 0.01 and p["loss.normalise"] == "batch"


def test_a_spec_asking_for_a_tracker_that_is_not_installed_names_the_extra(monkeypatch):
    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec",
                        lambda name: None if name == "mlflow" else real(name))
    assert missing_extras({"mlflow": {"experiment": "x"}, "tensorboard": True}) == ["mlflow"]
    assert missing_extras({"tensorboard": False}) == []


def test_a_spec_asking_for_a_missing_tracker_is_refused_before_anything_runs(
        monkeypatch, tmp_path, data_root, search):
    import ray

    from dm_search.driver import runner
    from dm_search.study.reading import load_spec
    from dm_search.training.config import ConfigError

    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec",
                        lambda name: None if name == "mlflow" else real(name))
    spec = load_spec(search.write_spec(tmp_path, data_root, tracking={"mlflow": {}}))
    with pytest.raises(ConfigError, match=r'tracking in mlflow, which is not installed: '
                                          r'pip install "dm-search\[mlflow\]"'):
        runner.run_study(spec, storage_url=f"sqlite:///{tmp_path}/s.db")
    assert not ray.is_initialized() and not (tmp_path / "s.db").exists()


def test_a_tracking_uri_with_a_password_is_refused_so_that_it_never_reaches_the_database():
    from pydantic import ValidationError

    from dm_search.study.spec import MLflowSpec

    with pytest.raises(ValidationError, match="MLFLOW_TRACKING_PASSWORD"):
        MLflowSpec(tracking_uri="https://me:secret@mlflow.example:5000")
    assert MLflowSpec(tracking_uri="https://mlflow.example:5000").tracking_uri


class _Breaks(tracking._Backend):
    name = "Broken"

    def __init__(self):
        self.calls = 0

    def epoch(self, key, step, metrics):
        self.calls += 1
        raise ConnectionError("connection refused\nmore detail")


class _Keeps(tracking._Backend):
    name = "Kept"

    def __init__(self):
        self.epochs = []

    def epoch(self, key, step, metrics):
        self.epochs.append((key, step, metrics))


def test_a_tracker_that_fails_is_dropped_after_one_warning_and_the_others_go_on():
    said = []
    broken, kept = _Breaks(), _Keeps()
    t = Tracking([broken, kept], said.append)
    with pytest.warns(UserWarning, match="Broken tracking stopped: connection refused"):
        t.epoch("trial_0", 1, {"val_acc": 0.5, "memorised": float("nan"), "note": "x"})
    t.epoch("trial_0", 2, {"val_acc": 0.6})
    assert broken.calls == 1 and len(said) == 1 and "goes on without it" in said[0]
    # NaN (a metric that does not apply) and text are never sent as metrics
    assert kept.epochs == [("trial_0", 1, {"val_acc": 0.5}), ("trial_0", 2, {"val_acc": 0.6})]


def test_a_tracking_server_that_is_down_costs_a_warning_not_the_study(free_port, tmp_path):
    said = []
    t = open_tracking({"mlflow": {"tracking_uri": f"http://127.0.0.1:{free_port}"}},
                      "s", tmp_path, said.append)
    with pytest.warns(UserWarning, match="MLflow tracking stopped"):
        t.study_started("s", {})
    t.trial_started("trial_0", "trial", "trial 0", {})  # nothing left to tell: no error
    assert not t and len(said) == 1


@pytest.mark.slow
def test_a_study_tracked_in_mlflow_and_tensorboard(tmp_path, data_root, search):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    spec = search.write_spec(tmp_path, data_root, name="tracked", n_trials=3, epochs=3,
                             final={"enabled": True, "seeds": 2},
                             tracking={"mlflow": {"tracking_uri": uri, "experiment": "noisy"},
                                       "tensorboard": True})
    url = f"sqlite:///{tmp_path}/studies.db"
    out = search.run_cli("submit", str(spec), "--storage", url)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "tracking stopped" not in out.stdout + out.stderr
    study = optuna.load_study(study_name="tracked", storage=st.open_storage(url))
    trained = [t for t in study.trials if not st.stop_reason(t).startswith("duplicate")]

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("noisy")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    roles = [r.data.tags[tracking.ROLE_TAG] for r in runs]
    parent = next(r for r in runs if r.data.tags[tracking.ROLE_TAG] == "study")
    assert parent.info.status == "FINISHED" and parent.info.run_name == "tracked"
    assert roles.count("study") == 1 and roles.count("reference") == 1
    assert roles.count("trial") == len(trained) - 1 and roles.count("final") == 4
    for r in runs:
        if r is parent:
            continue
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert r.info.status == "FINISHED" and r.data.tags["stop_reason"]
    trial = next(r for r in runs if r.data.tags[tracking.ROLE_TAG] == "trial")
    assert {"edf.family", "edf.mode", "edf.spread", "edf.mean", "edf.std"} <= set(
        trial.data.params)
    history = client.get_metric_history(trial.info.run_id, "val_acc")
    epochs = sorted(m.step for m in history)
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) >= 1
    if trial.data.tags["stop_reason"] == "finished":
        assert len(epochs) == 3
    arts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"report.html", "best_edf.yaml"} <= arts

    logs = sorted((tmp_path / "tensorboard" / "tracked").glob("trial_*"))
    assert len(logs) == len(trained)  # the reference and every trained trial
    assert len(list((tmp_path / "tensorboard" / "tracked").glob("final_*"))) == 4
    acc = EventAccumulator(str(logs[0]))
    acc.Reload()
    assert "val_acc" in acc.Tags()["scalars"]
    steps = [e.step for e in acc.Scalars("val_acc")]
    assert steps == list(range(1, len(steps) + 1))
