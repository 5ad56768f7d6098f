"""End-to-end search studies through the CLI, checked in the database."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import optuna
import pytest
from optuna.trial import TrialState

from dm_search import storage as st

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.slow


def _load(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=st.open_storage(url))


def test_study_end_to_end_with_sqlite(search, tmp_path, data_root):
    spec = search.write_spec(tmp_path, data_root, final={"enabled": True, "seeds": 2},
                             race={"candidates": 2, "seeds": 2, "window": 2},
                             scheduler={"name": "none"})
    out = search.run_cli("submit", str(spec))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "started (reference): cce" in out.stdout and "done 5/5" in out.stdout
    assert "final test accuracy: best EDF" in out.stdout
    url = f"sqlite:///{tmp_path}/studies.db"
    study = search.check_study(url, "tiny", 4, 3)
    # The race: the top two full-budget trials, two new seeds each, recorded as runs of the
    # study (no new trials), and its winner is the study's best.
    race = st.race(study)
    assert "race: trials" in out.stdout and f"trial {race['winner']} wins" in out.stdout
    assert [len(c["runs"]) for c in race["candidates"]] in ([2, 2], [2, 1], [1, 2])
    ranked = st.ranked_trials(study)
    assert [c["trial"] for c in race["candidates"]] == [t.number for t in ranked[:2]]
    for c in race["candidates"]:
        assert [r["seed"] for r in c["runs"]] == [1, 2][:len(c["runs"])]
        assert all(r["epochs"] == 3 and 0 <= r["score"] <= 1 for r in c["runs"])
    assert st.best_trial(study).number == race["winner"]
    assert st.epochs_trained(study) == st.search_epochs(study) + 3 * sum(
        len(c["runs"]) for c in race["candidates"])
    final = st.final_stage(study)
    assert final["seeds"] == 2
    assert len(final["best"]["runs"]) == 2 and len(final["ce"]["runs"]) == 2
    assert final["ce"]["edf"] == {"family": "cce"}
    best = st.best_trial(study)
    assert best is not None and final["best"]["trial"] == best.number
    assert final["gain"] == pytest.approx(final["best"]["test_acc_mean"]
                                          - final["ce"]["test_acc_mean"])
    for run in final["best"]["runs"] + final["ce"]["runs"]:  # the report's full curves
        assert [h["epoch"] for h in run["history"]] == [1, 2, 3]
        assert run["history"][-1]["test_acc"] == pytest.approx(run["test_acc"], abs=1e-4)
        assert run["node"]["cores"] and run["wall_s"] > 0
    # provenance: the submission's versions and machine, each trial's node's hardware
    runs = st.study_runs(study)
    assert len(runs) == 1 and runs[0]["versions"]["torch"] and runs[0]["driver"]["cpu"]

    summary = search.status_json(url, "tiny")
    assert summary["trials"] == 5 and summary["best"]["number"] == best.number
    assert set(summary["families"]) <= {"dm", "gce"}
    assert [r["edf"] for r in summary["references"]] == [{"family": "cce"}]
    # The final stage compared with the CE reference's own recipe.
    assert final["ce"]["edf"] == summary["references"][0]["edf"]
    listed = search.run_cli("list", "--storage", url)
    assert listed.returncode == 0 and "tiny" in listed.stdout

    # The same name again: refused without --resume, and with a different spec.
    again = search.run_cli("submit", str(spec))
    assert again.returncode == 2 and "already exists. Add --resume" in again.stderr
    (tmp_path / "other").mkdir()
    other = search.write_spec(tmp_path / "other", data_root, epochs=4, study_dir=str(tmp_path))
    clash = search.run_cli("submit", str(other))
    assert clash.returncode == 2 and "different spec" in clash.stderr
    # Resuming a finished study runs nothing more.
    resumed = search.run_cli("submit", str(spec), "--resume")
    assert resumed.returncode == 0 and "all 4 trials are done" in resumed.stdout
    assert f"race already decided: trial {race['winner']}" in resumed.stdout
    assert "started (reference)" not in resumed.stdout  # the baseline is not run again
    assert len(_load(url, "tiny").trials) == 5


def _start_and_wait(search, spec, url: str, name: str
                    ) -> tuple[subprocess.Popen, dict[int, float]]:
    """Start ``submit`` in a session of its own and return once the study has a finished and
    a running trial, with the finished trials' values."""
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("RAY_ADDRESS", None)
    # Files, not pipes: Ray's own processes inherit them and may outlive a killed driver.
    proc = subprocess.Popen([search.cli, "submit", spec.name],
                            stdout=(spec.parent / f"{name}.out").open("w"),
                            stderr=(spec.parent / f"{name}.err").open("w"),
                            start_new_session=True, env=env, cwd=spec.parent)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.3)
        try:
            trials = _load(url, name).trials
        except Exception:
            continue
        done = {t.number: t.value for t in trials if t.state == TrialState.COMPLETE}
        running = [t for t in trials if t.state == TrialState.RUNNING
                   and t.user_attrs.get(st.TrialKey.EPOCHS)]
        if done and running:
            return proc, done
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError("the study never had a finished and a running trial at once")


def _long_spec(search, tmp_path, data_root, name):
    return search.write_spec(tmp_path, data_root, name=name, epochs=25, n_trials=6,
                             model="cnn1d", num_samples=1200, scheduler={"name": "none"},
                             baselines=[])


def test_killed_study_resumes_without_losing_trials(search, tmp_path, data_root):
    spec = _long_spec(search, tmp_path, data_root, "killme")
    url = f"sqlite:///{tmp_path}/studies.db"
    proc, finished_before = _start_and_wait(search, spec, url, "killme")
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started, at once
    proc.wait()
    interrupted = {t.number for t in _load(url, "killme").trials if t.state == TrialState.RUNNING}
    assert interrupted

    out = search.run_cli("submit", str(spec), "--resume")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{len(interrupted)} interrupted one(s) marked failed" in out.stdout
    study = _load(url, "killme")
    by_number = {t.number: t for t in study.trials}
    for number, value in finished_before.items():  # nothing completed was lost
        assert by_number[number].state == TrialState.COMPLETE
        assert by_number[number].value == value
    for number in interrupted:
        assert by_number[number].state == TrialState.FAIL
        assert by_number[number].user_attrs[st.TrialKey.STOP] == st.INTERRUPTED
    counted = [t for t in study.trials if t.state.is_finished()
               and t.user_attrs.get(st.TrialKey.STOP) != st.INTERRUPTED]
    assert len(counted) == 6
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]


def test_a_failing_trial_is_recorded_and_the_study_goes_on(search, tmp_path, data_root):
    spec = search.write_spec(
        tmp_path, data_root, name="fails", n_trials=3, epochs=2, warm_start=False,
        scheduler={"name": "none"}, sampler={"name": "grid"},
        baselines=[],
        space={"families": {"dm": {}},
               "params": {"optim.lr": {"low": 1e-3, "high": 1e31, "log": True}},
               "grid": [{"family": "dm", "lam": 1.0, "beta": 8.0, "optim.lr": 1e30},
                        {"family": "dm", "optim.lr": 0.05},
                        {"family": "dm", "lam": 1.0, "beta": 8.0, "optim.lr": 0.05}]})
    out = search.run_cli("submit", str(spec))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "trial 0 failed: TrialDiverged" in out.stdout
    study = _load(f"sqlite:///{tmp_path}/studies.db", "fails")
    first, *rest = study.trials
    assert first.state == TrialState.FAIL
    assert st.stop_reason(first).startswith("failed: TrialDiverged: trial diverged in epoch 1")
    assert st.trial_config(first)["optim"]["lr"] == 1e30
    assert [t.state for t in rest] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert st.best_trial(study) is not None
    # Some trials failed: the study exits 0 and says how many and why.
    assert "warning: 1 trial(s) failed: 1 x TrialDiverged" in " ".join(out.stderr.split())


def test_a_study_whose_every_trial_fails_exits_1_saying_why(search, tmp_path, data_root):
    spec = search.write_spec(
        tmp_path, data_root, name="allfail", n_trials=2, epochs=2, warm_start=False,
        scheduler={"name": "none"}, baselines=[],
        space={"families": {"dm": {}},
               "params": {"optim.lr": {"low": 1e29, "high": 1e31, "log": True}}})
    out = search.run_cli("submit", str(spec))
    assert out.returncode == 1, out.stdout + out.stderr
    err = " ".join(out.stderr.split())
    assert "every trial failed (2 x TrialDiverged)" in err and "--resume" in err
    # One line per failed trial; Ray's tracebacks and its own summaries stay in its logs.
    assert "Traceback" not in out.stdout + out.stderr
    assert "Trials did not complete" not in out.stderr and "Last result" not in out.stdout
    assert out.stdout.count("failed: TrialDiverged") == 2


def test_bad_spec_and_unreachable_database_write_nothing(search, tmp_path, data_root):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nspace: {families: {dmm: {}}}\n")
    out = search.run_cli("submit", str(bad))
    assert out.returncode == 2 and "unknown EDF family" in out.stderr
    spec = search.write_spec(tmp_path, data_root, name="nodb")
    out = search.run_cli("submit", str(spec), "--storage",
                  "postgresql+psycopg://me:topsecret@127.0.0.1:1/db")
    assert out.returncode == 2
    assert "cannot open the study database" in out.stderr and "topsecret" not in out.stderr
    assert not (tmp_path / "studies.db").exists()
    out = search.run_cli("submit", str(spec), "--address", "127.0.0.1:1", timeout=120)
    assert out.returncode == 2 and "cannot connect to the Ray cluster" in out.stderr
    assert not [s for s in st.open_storage(f"sqlite:///{tmp_path}/studies.db")
                .get_all_studies()]


def test_moments_spec_budget_and_duplicates_end_to_end(search, tmp_path, data_root):
    """A study searched in (mean, std), with a second baseline, an epoch budget, and a grid
    point that repeats a reference: the repeat is not trained again."""
    spec = search.write_spec(
        tmp_path, data_root, name="moments", n_trials=6, epochs=3, warm_start=False,
        baselines=["cce", "gce:q=0.7"], budget_epochs=15,
        space={"families": {"dm": {"mean": [0.3, 0.6], "std": [0.15, 0.25]}, "gce": {}}},
        race={"candidates": 2, "seeds": 1, "reserve": 0.4})
    out = search.run_cli("submit", str(spec))
    assert out.returncode == 0, out.stdout + out.stderr
    study = _load(f"sqlite:///{tmp_path}/studies.db", "moments")
    refs = st.reference_trials(study)
    assert sorted(st.trial_edf(t)["family"] for t in refs) == ["cce", "gce"]
    assert st.epochs_trained(study) <= 15  # the races' runs included
    assert st.search_epochs(study) <= 9  # 15 less the races' 6 held back
    for t in study.trials:
        if st.is_reference(t):
            continue
        edf = st.trial_edf(t)
        if edf["family"] == "dm":
            assert 0.3 - 1e-6 <= t.user_attrs["mean"] <= 0.6 + 1e-6
            assert 0.15 - 1e-6 <= t.user_attrs["std"] <= 0.25 + 1e-6
            assert t.params["dm.mean"] == pytest.approx(t.user_attrs["mean"], abs=1e-5)
    # Resumed with a larger budget: the study goes on, and its references are not run again.
    spec2 = search.write_spec(
        tmp_path, data_root, name="moments", n_trials=6, epochs=3, warm_start=False,
        baselines=["cce", "gce:q=0.7"], budget_epochs=24,
        space={"families": {"dm": {"mean": [0.3, 0.6], "std": [0.15, 0.25]}, "gce": {}}},
        race={"candidates": 2, "seeds": 1, "reserve": 0.4})
    before = len(study.trials)
    again = search.run_cli("submit", str(spec2), "--resume")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "(reference)" not in again.stdout
    study = _load(f"sqlite:///{tmp_path}/studies.db", "moments")
    assert len(st.reference_trials(study)) == 2
    assert before < len(study.trials) and st.epochs_trained(study) <= 24


def test_a_schedule_study_end_to_end(search, tmp_path, data_root):
    """A study that searches emphasis schedules: the paper's points run first as fixed EDFs,
    the searched trials move their EDF epoch by epoch, the best is retrained with its schedule
    and exported with it."""
    spec = search.write_spec(
        tmp_path, data_root, name="sched", n_trials=4, epochs=4,
        scheduler={"name": "none"}, final={"enabled": True, "seeds": 1},
        space={"families": {"dm": {"mode": [0.0, 0.75], "spread": [4.0, 24.0],
                                   "mode_end": [0.0, 0.75], "ramp": ["linear", "cosine"]}}})
    out = search.run_cli("submit", str(spec))
    assert out.returncode == 0, out.stdout + out.stderr
    assert " -> dm(" in out.stdout  # progress lines name the schedule
    study = search.check_study(f"sqlite:///{tmp_path}/studies.db", "sched", 4, 4)
    searched = [t for t in study.trials if not st.is_reference(t)]
    fixed = [t for t in searched if st.trial_schedule(t) is None]
    moving = [t for t in searched if st.trial_schedule(t) is not None]
    # warm start: the paper's three dm points, each ending where it starts
    assert [st.trial_edf(t)["lam"] for t in fixed] == [0.5, 1.0, 2.0]
    assert moving and {"mode_end", "spread_end", "mean_end", "std_end", "ramp"} <= set(
        moving[0].user_attrs)
    for t in moving:
        modes = [h["mode"] for h in st.trial_history(study, t)]
        end = t.user_attrs[st.TrialKey.MODE_END]
        assert modes[-1] == pytest.approx(end, abs=1e-6) and modes[0] != pytest.approx(end)
        assert modes == sorted(modes) or modes == sorted(modes, reverse=True)
    final = st.final_stage(study)
    best = st.best_trial(study)
    assert final["best"]["trial"] == best.number
    assert final["best"].get("edf_end") == (st.trial_schedule(best) or {}).get("edf_end")
    exported = search.run_cli("export", "sched", "--storage", f"sqlite:///{tmp_path}/studies.db",
                              "-o", str(tmp_path / "best.yaml"))
    assert exported.returncode == 0, exported.stderr
    from dm_search.training.exported import read_export

    doc = read_export(tmp_path / "best.yaml")
    assert ("schedule" in doc) == (st.trial_schedule(best) is not None)
    from dm_search.results.learning import curves_info

    emphasis = curves_info(study, "mode", k=len(searched))  # the report's emphasis figure
    moved = [ys for label, (_, ys) in zip(emphasis.labels, emphasis.series, strict=True)
             if " -> " in label]
    assert moved and all(len(set(ys)) > 1 for ys in moved)
    # Every searched trial got its EDF figure for the dashboard, drawn off the sampler's path
    # but attached before the trial was told to Optuna.
    from optuna.artifacts import get_all_artifact_meta

    for t in searched:
        metas = get_all_artifact_meta(t, storage=study._storage)
        assert "edf_curve.svg" in [m.filename for m in metas], t.number


def test_no_configuration_is_trained_twice(search, tmp_path, data_root):
    """A grid point that repeats the gce reference is recorded as its duplicate, untrained."""
    spec = search.write_spec(
        tmp_path, data_root, name="dups", n_trials=3, epochs=2, warm_start=False,
        scheduler={"name": "none"}, sampler={"name": "grid"}, baselines=["gce:q=0.7"],
        space={"families": {"dm": {}, "gce": {}},
               "grid": [{"family": "dm", "lam": 1.0, "beta": 8.0},
                        {"family": "gce", "q": 0.7}]})
    out = search.run_cli("submit", str(spec))
    assert out.returncode == 0, out.stdout + out.stderr
    study = _load(f"sqlite:///{tmp_path}/studies.db", "dups")
    assert len(study.trials) == 4  # 3 searched and the reference
    trained = [t for t in study.trials if t.user_attrs.get(st.TrialKey.DUPLICATE) is None]
    keys = [st.config_key(st.trial_config(t)) for t in trained]
    assert len(keys) == len(set(keys)) == 3
    (copy,) = [t for t in study.trials if t.user_attrs.get(st.TrialKey.DUPLICATE) is not None]
    (ref,) = st.reference_trials(study)
    assert copy.user_attrs[st.TrialKey.DUPLICATE] == ref.number
    assert copy.user_attrs[st.TrialKey.STOP] == f"duplicate of trial {ref.number}"
    assert copy.state == TrialState.PRUNED and not st.is_eligible(copy)
    assert not st.trial_history(study, copy)  # never trained
    assert f"repeats trial {ref.number}'s configuration" in out.stdout


def test_a_study_under_median_stopping(search, tmp_path, data_root):
    spec = search.write_spec(tmp_path, data_root, name="median", n_trials=5, epochs=4,
                      warm_start=False, baselines=[],
                      scheduler={"name": "median", "grace_period": 1})
    out = search.run_cli("submit", str(spec))
    assert out.returncode == 0, out.stdout + out.stderr
    study = search.check_study(f"sqlite:///{tmp_path}/studies.db", "median", 5, 4, references=0)
    assert st.best_trial(study) is not None


@pytest.mark.parametrize("sig, code, to_group", [(signal.SIGINT, 130, True),
                                                 (signal.SIGTERM, 143, False),
                                                 (signal.SIGTERM, 143, True)])
def test_ctrl_c_and_sigterm_stop_the_study_and_say_how_to_resume(search, tmp_path, data_root,
                                                                  sig, code, to_group):
    # Ctrl-C in a terminal reaches the whole process group; SIGTERM comes to the driver alone
    # (kill PID) or to the group (systemd, `timeout`), whose Ray processes then end with it.
    name = f"stop{code}{'g' if to_group else ''}"
    spec = _long_spec(search, tmp_path, data_root, name)
    url = f"sqlite:///{tmp_path}/studies.db"
    proc, finished_before = _start_and_wait(search, spec, url, name)
    status = search.run_cli("status", name, "--storage", url)
    assert "running: driver pid" in status.stdout, status.stdout
    (os.killpg if to_group else os.kill)(proc.pid, sig)
    t0 = time.monotonic()
    proc.wait(timeout=120)
    assert time.monotonic() - t0 < 30  # never Ray's minute-long wait on processes gone
    out, err = (tmp_path / f"{name}.out").read_text(), (tmp_path / f"{name}.err").read_text()
    assert proc.returncode == code, out + err
    again = f"dm-search submit {spec.name} --resume"
    assert f"Resume it with: {again}" in err and "Traceback" not in out + err
    study = _load(url, name)
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    interrupted = [t for t in study.trials if t.user_attrs.get(st.TrialKey.STOP) == st.INTERRUPTED]
    assert interrupted and all(t.state == TrialState.FAIL for t in interrupted)
    status = search.run_cli("status", name, "--storage", url)
    assert "stopped by a signal" in status.stdout and again in status.stdout
    if sig != signal.SIGINT:
        return
    # The printed command, run where the study was submitted, finishes the study.
    resumed = subprocess.run([search.cli, *again.split()[1:]], cwd=spec.parent,
                             capture_output=True, text=True, timeout=600,
                             env={**os.environ, "COLUMNS": "200"})
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    by_number = {t.number: t for t in _load(url, name).trials}
    for number, value in finished_before.items():
        assert by_number[number].value == value
    assert sum(t.user_attrs.get(st.TrialKey.STOP) == st.FINISHED
               for t in by_number.values()) == 6
