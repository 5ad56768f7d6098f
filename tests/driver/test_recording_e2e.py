"""Nothing the trials report is lost, however the driver ends: one study, stopped in turn by
Ctrl-C, SIGTERM and kill -9, each time resumed, then run to its end (an exception in the
driver: test_runner_rules). Its loop logs every epoch it reports with the time; the database
must hold every epoch reported more than a second before the driver stopped (all of them on a
normal end)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from dm_search import storage as st

pytestmark = pytest.mark.slow

SLEEPER = '''
import json
import time


def train(trial):
    key = json.dumps(trial.loss.edf.to_config(), sort_keys=True)
    for epoch in range(1, trial.epochs + 1):
        time.sleep(0.15)
        trial.report(epoch=epoch, val_acc=0.5 + 0.01 * epoch)
        with open(LOG, "a") as f:
            f.write(json.dumps([key, epoch, time.time()]) + "\\n")
'''

DRIVER = '''
import sys

from dm_search.api import _as_spec
from dm_search.driver.runner import run_study
from dm_search.driver.signals import StudyInterrupted
from dm_search.storage import Resume

proj = sys.argv[1]
SPEC = {"name": "rec", "study_dir": proj + "/runs", "code": proj,
        "base": {"trainer": "sleeper:train", "optim": {"epochs": 6}},
        "space": {"families": {"dm": {}}}, "scheduler": {"name": "none"},
        "sampler": {"name": "random", "seed": 0}, "baselines": [],
        "n_trials": 40, "max_concurrent": 3, "resources": {"cpu": 0.5},
        "race": {"enabled": False}, "final": {"enabled": False}}

try:
    run_study(_as_spec(SPEC, None, None), resume=Resume.EITHER)
except StudyInterrupted as err:
    sys.exit(err.exit_code)
print("DONE", flush=True)
'''


def _sent(proj: Path) -> list[tuple[str, int, float]]:
    log = proj / "sent.log"
    if not log.exists():
        return []
    return [tuple(json.loads(line)) for line in log.read_text().splitlines() if line]


def _recorded(proj: Path) -> set[tuple[str, int]]:
    study = optuna.load_study(study_name="rec",
                              storage=st.open_storage(f"sqlite:///{proj}/runs/studies.db"))
    trials = study.get_trials(deepcopy=False)
    hist = st.histories(study, trials)
    return {(json.dumps(st.trial_edf(t), sort_keys=True), int(h["epoch"]))
            for t in trials for h in hist[t._trial_id]}


def _start(proj: Path, mode: str) -> subprocess.Popen:
    out = (proj / f"{mode}.out").open("a")
    return subprocess.Popen([sys.executable, str(proj / "driver.py"), str(proj), mode],
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                            cwd=proj, env={k: v for k, v in os.environ.items()
                                           if k != "RAY_ADDRESS"})


def _wait_for_reports(proj: Path, proc: subprocess.Popen, more: int) -> None:
    start = len(_sent(proj))
    deadline = time.monotonic() + 240
    while len(_sent(proj)) < start + more:
        assert proc.poll() is None, (proj / "go.out").read_text()[-3000:]
        assert time.monotonic() < deadline, "the trials reported too little"
        time.sleep(0.2)


def _missing(proj: Path, since: float, before: float) -> list[tuple[str, int, float]]:
    """Epochs reported between ``since`` and ``before`` (epoch seconds) that the database
    lacks."""
    got = _recorded(proj)
    return [s for s in _sent(proj) if since <= s[2] < before and (s[0], s[1]) not in got]


def test_every_reported_epoch_survives_every_way_the_driver_ends(tmp_path):
    proj = tmp_path
    (proj / "sleeper.py").write_text(f"LOG = {str(proj / 'sent.log')!r}\n" + SLEEPER)
    (proj / "driver.py").write_text(DRIVER)

    # Ctrl-C, then SIGTERM to the driver alone: both flush what the driver received.
    for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        started = time.time()
        proc = _start(proj, "go")
        _wait_for_reports(proj, proc, 12)
        stopped = time.time()
        (os.killpg if sig == signal.SIGINT else os.kill)(proc.pid, sig)
        assert proc.wait(timeout=120) == code, (proj / "go.out").read_text()[-3000:]
        assert not _missing(proj, started, stopped - 1.0), sig

    # kill -9 of the driver and its Ray: at most the last second of reports is lost.
    started = time.time()
    proc = _start(proj, "go")
    _wait_for_reports(proj, proc, 12)
    killed = time.time()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not _missing(proj, started, killed - 1.0)
    url = f"sqlite:///{proj}/runs/studies.db"
    running = [t for t in optuna.load_study(study_name="rec", storage=url).trials
               if t.state == optuna.trial.TrialState.RUNNING]
    assert running  # what the kill cut short, repaired by the resume below

    # A normal end records everything, and the resume repaired the killed run's trials.
    resumed = time.time()
    proc = _start(proj, "go")
    assert proc.wait(timeout=600) == 0, (proj / "go.out").read_text()[-3000:]
    assert not _missing(proj, resumed, float("inf"))
    study = optuna.load_study(study_name="rec", storage=url)
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    finished = [t for t in study.trials if st.stop_reason(t) == st.FINISHED]
    assert len(finished) == 40
    for t in finished:  # whole, in order, once each
        assert [h["epoch"] for h in st.trial_history(study, t)] == [1, 2, 3, 4, 5, 6]
        assert t.intermediate_values == {6: pytest.approx(0.56)}
