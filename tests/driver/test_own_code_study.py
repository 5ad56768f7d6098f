"""Studies of the user's own training loop, end to end: from YAML through `dm-search submit`
(code shipped from the spec's folder), and from Python through dm_search.search with a
function defined in the running script. Everything a study does must work for it: the CE
reference through the same loop, early stopping, a failing trial, races, the final stage with
seeds and lr factors, resume, the report and the export."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from dm_search import storage as st

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]

# A module that exists only in the project folder the study is submitted from.
LABS = '''
import torch
from torch import nn


def train(trial):
    """A loop of one's own: an MLP on trial.data, full-batch steps, both accuracies reported.
    This loop refuses GCE, so that one searched trial fails with the loop's own error."""
    if trial.loss.edf.family == "gce":
        raise NotImplementedError("this loop takes no GCE")
    d = trial.data
    torch.manual_seed(trial.seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(d.input_shape[0] * d.input_shape[1],
                                                 trial.params["width"]),
                        nn.ReLU(), nn.Linear(trial.params["width"], d.num_classes))
    opt = trial.recipe.optimizer(net.parameters())
    for epoch in range(1, trial.epochs + 1):
        bs = trial.recipe.batch_size
        for i in range(0, len(d.y_train), bs):
            loss = trial.loss(net(d.x_train[i:i + bs]), d.y_train[i:i + bs])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            val = (net(d.x_val).argmax(1) == d.y_val).float().mean().item() if len(d.y_val) \\
                else None
            test = (net(d.x_test).argmax(1) == d.y_test).float().mean().item()
        trial.report(epoch=epoch, val_acc=val, test_acc=test, train_loss=loss.item())
'''


def _project(tmp_path: Path, data_root: Path, **extra) -> Path:
    proj = tmp_path / "proj"
    proj.mkdir(exist_ok=True)
    (proj / "labs.py").write_text(LABS)
    spec = {
        "name": extra.pop("name", "labs"), "study_dir": str(tmp_path / "runs"), "code": ".",
        "base": {"trainer": "labs:train", "params": {"width": 16},
                 "data": {"name": "mnist1d", "num_samples": 500, "root": str(data_root),
                          "noise": {"kind": "symmetric", "rate": 0.4}},
                 "optim": {"epochs": 4, "batch_size": 64}},
        "space": {"families": {"dm": {}, "gce": {}},
                  "params": {"params.width": {"choices": [8, 16]}}},
        "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
        "sampler": {"name": "tpe", "seed": 0, "options": {"n_startup_trials": 3}},
        "n_trials": 4, "max_concurrent": 2, "resources": {"cpu": 1},
        "race": {"enabled": True, "candidates": 2},
        "final": {"enabled": True, "seeds": 2, "lr_factors": [2.0]},
        **extra,
    }
    (proj / "study.yaml").write_text(yaml.safe_dump(spec))
    return proj


def test_a_study_of_ones_own_loop_from_yaml_does_all_a_study_does(search, tmp_path, data_root):
    proj = _project(tmp_path, data_root)
    # Submitted from elsewhere: the module is found through the spec's code folder alone.
    out = search.run_cli("submit", str(proj / "study.yaml"))
    assert out.returncode == 0, out.stdout + out.stderr
    url = f"sqlite:///{tmp_path}/runs/studies.db"
    # What every study records (epochs, nodes, the dashboard's figures, the CE reference).
    study = search.check_study(url, "labs", 4, 4)
    trials = study.trials
    assert len(trials) == 5
    for t in trials:
        assert st.trial_config(t)["trainer"] == "labs:train"
    # The CE reference trained through the same loop, at full budget.
    (ref,) = st.reference_trials(study)
    assert st.trial_edf(ref) == {"family": "cce"} and st.stop_reason(ref) == st.FINISHED
    assert [h["epoch"] for h in st.trial_history(study, ref)] == [1, 2, 3, 4]
    # The searched width reached the loop as trial.params.
    assert {st.trial_config(t)["params"]["width"] for t in trials if not st.is_reference(t)} \
        <= {8, 16}
    # A loop that raises fails its trial with its last line and file:line; the study went on.
    failed = [t for t in trials if st.trial_edf(t)["family"] == "gce"]
    # ... at the line of the user's own file, not of the copy Ray shipped to the worker.
    assert failed and all(
        "NotImplementedError: this loop takes no GCE" in st.stop_reason(t)
        and f"({proj}/labs.py:" in st.stop_reason(t) for t in failed), \
        [st.stop_reason(t) for t in failed]
    finished = [t for t in trials if st.stop_reason(t) in (st.FINISHED, st.EARLY)]
    assert len(finished) >= 3
    race = st.race(study)
    assert race and race.get("winner") is not None
    final = st.final_stage(study)
    assert len(final["best"]["runs"]) == len(final["ce"]["runs"]) == 2
    assert all(0.0 <= r["test_acc"] <= 1.0 for r in final["best"]["runs"])
    assert [r["factor"] for r in final["lr_sensitivity"]] == [1.0, 2.0]

    # Resumed with a larger budget: its trials are kept, new ones run through the same loop.
    out = search.run_cli("submit", str(proj / "study.yaml"), "--resume", "--name", "labs")
    assert out.returncode == 0, out.stdout + out.stderr
    spec = yaml.safe_load((proj / "study.yaml").read_text())
    spec["n_trials"] = 6
    (proj / "study.yaml").write_text(yaml.safe_dump(spec))
    out = search.run_cli("submit", str(proj / "study.yaml"), "--resume")
    assert out.returncode == 0, out.stdout + out.stderr
    study = optuna.load_study(study_name="labs", storage=url)
    assert len(study.trials) == 7
    assert [t.number for t in study.trials[:5]] == [t.number for t in trials]

    report = tmp_path / "labs.html"
    out = search.run_cli("report", "labs", "--storage", url, "-o", str(report))
    assert out.returncode == 0, out.stderr
    assert "labs:train" in report.read_text()
    export = tmp_path / "best.yaml"
    out = search.run_cli("export", "labs", "--storage", url, "-o", str(export))
    assert out.returncode == 0, out.stderr
    from dm_search import load_loss, load_recipe

    assert load_loss(export).edf.family in ("dm", "cce") and load_recipe(export).epochs == 4


def test_the_python_api_runs_a_scripts_own_function_and_returns_the_result(tmp_path):
    """examples/own_loop.py: its trainer is a function of the script itself (sent to the
    workers by value), its spec a dict; the result object exports the winner."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "own_loop.py"), "--trials", "2",
         "--epochs", "3", "--study-dir", str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "best EDF: EDF(" in out.stdout
    assert "CE (cce)" in out.stdout and "over 2 seeds" in out.stdout
    exported = tmp_path / "runs" / "own-loop_best_edf.yaml"
    assert exported.is_file()
    study = optuna.load_study(study_name="own-loop",
                              storage=f"sqlite:///{tmp_path}/runs/studies.db")
    assert {st.trial_config(t)["trainer"] for t in study.trials} == {"__main__:train"}
    assert len(study.trials) == 3


STOPPABLE = '''
import sys
import time

import dm_search


def train(trial):
    """No data of the spec's: this loop brings its own (here: none at all)."""
    assert trial.data is None
    for epoch in range(1, trial.epochs + 1):
        time.sleep(0.4)
        trial.report(epoch=epoch, val_acc=0.5 + 0.01 * epoch, test_acc=0.5)


SPEC = {"name": "api-stop", "study_dir": sys.argv[1],
        "base": {"optim": {"epochs": 4}},
        "space": {"families": {"dm": {}}}, "scheduler": {"name": "none"},
        "n_trials": 5, "max_concurrent": 2, "race": {"enabled": False},
        "budget_epochs": 100}

if __name__ == "__main__":
    try:
        result = dm_search.search(SPEC, trainer=train, resume=len(sys.argv) > 2)
    except KeyboardInterrupt:
        print("STOPPED", flush=True)
        sys.exit(130)
    print("DONE", result.summary["trials"], flush=True)
    result.export(sys.argv[1] + "/best.yaml")
'''


def test_ctrl_c_stops_a_python_api_study_which_resumes(tmp_path):
    import signal
    import time

    script = tmp_path / "stoppable.py"
    script.write_text(STOPPABLE)
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, str(script), str(runs)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    lines = []
    deadline = time.monotonic() + 300
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if " finished" in line:  # a trial is on record: stop the study now
            proc.send_signal(signal.SIGINT)
            break
        assert time.monotonic() < deadline, "".join(lines)
    out = "".join(lines) + proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out
    assert "STOPPED" in out and "Resume it with dm_search.search(" in out
    url = f"sqlite:///{runs}/studies.db"
    done = [t.number for t in optuna.load_study(study_name="api-stop", storage=url).trials
            if st.stop_reason(t) == st.FINISHED]
    assert done

    again = subprocess.run([sys.executable, str(script), str(runs), "resume"],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "DONE" in again.stdout
    study = optuna.load_study(study_name="api-stop", storage=url)
    finished = [t.number for t in study.trials if st.stop_reason(t) == st.FINISHED]
    assert set(done) <= set(finished) and len(finished) == 6  # 5 searched and the CE reference
    assert all(st.trial_config(t)["data"] is None for t in study.trials)
    exported = yaml.safe_load((runs / "best.yaml").read_text())
    assert exported["provenance"]["trainer"] == "__main__:train"
    assert exported["provenance"]["dataset"] == "the training loop's own"
