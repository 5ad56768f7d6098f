"""A trial inside a Ray worker: its training thread runs at most one epoch ahead of Tune's
reports, a stop ends it within that epoch, and an error still travels in a last report."""

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from dm_search.driver import worker


class _Tune:
    """Stands in for ``ray.tune``: holds each report as long as a busy driver would, then
    records it with the number of epochs the trainer had finished by then."""

    def __init__(self, trained, *, hold_s=0.02, stop_at=None):
        self.trained, self.hold_s, self.stop_at = trained, hold_s, stop_at
        self.reports = []

    def report(self, metrics):
        if metrics.get("epoch") == self.stop_at:
            self.reports.append((dict(metrics), len(self.trained)))
            raise SystemExit(0)  # how Tune ends a trial its scheduler stopped
        time.sleep(self.hold_s)
        self.reports.append((dict(metrics), len(self.trained)))


class _Trial:
    """``trial(epochs, epoch_s=..., fail_at=None, **tune)`` runs ``worker.trainable`` on a fake
    trainer; afterwards (even if it raised) ``.tune``, ``.trained`` (the epochs the trainer
    finished) and ``.alive`` (training threads left) say what happened."""

    def __init__(self, monkeypatch):
        self.monkeypatch = monkeypatch
        self.tune, self.trained, self.alive = None, [], []

    def __call__(self, epochs, *, epoch_s=0.001, fail_at=None, **tune_kw):
        trained = self.trained

        def fake_run_trial(cfg, report, data, **kw):
            for e in range(1, epochs + 1):
                time.sleep(epoch_s)
                if e == fail_at:
                    raise RuntimeError(f"loss is nan in epoch {e}")  # _RAISE_LINE
                trained.append(e)
                report({"epoch": e, "val_acc": e / 100, "epoch_s": epoch_s})

        self.tune = _Tune(trained, **tune_kw)
        context = SimpleNamespace(get_assigned_resources=lambda: {"CPU": 1.0},
                                  get_node_id=lambda: "node")
        mp = self.monkeypatch
        mp.setattr(worker, "tune", self.tune)
        mp.setattr(worker, "ray", SimpleNamespace(
            get_runtime_context=lambda: context,
            util=SimpleNamespace(get_node_ip_address=lambda: "127.0.0.1")))
        mp.setattr(worker, "run_trial", fake_run_trial)
        mp.setattr(worker, "_prepared", lambda cfg: SimpleNamespace(
            y_train=[0] * 10, fingerprint="f", noise_rate=0.4))
        mp.setattr(worker, "total_epochs", lambda cfg, n: epochs)
        from dm_search.training.config import TrialConfig

        try:
            worker.trainable({"trial_config": TrialConfig().to_dict()})
        finally:
            self.alive = [t for t in threading.enumerate() if t.name == "dm-search-trial"]


_RAISE_LINE = next(i for i, line in enumerate(Path(__file__).read_text().splitlines(), 1)
                   if line.rstrip().endswith("# _RAISE_LINE") and "raise" in line)


@pytest.fixture
def trial(monkeypatch):
    return _Trial(monkeypatch)


def test_every_epoch_is_reported_in_order_while_training_runs_one_ahead(trial):
    trial(12)
    reports = trial.tune.reports
    assert [m["epoch"] for m, _ in reports] == list(range(1, 13))
    assert all(m["total_epochs"] == 12 and m["node_id"] == "node" for m, _ in reports)
    ahead = [n - m["epoch"] for m, n in reports]
    assert max(ahead) == 1  # it did run ahead while the driver held a report...
    assert min(ahead) >= 0 and trial.trained == list(range(1, 13))  # ...and never further
    assert not trial.alive


def test_long_epochs_keep_the_lockstep(trial, monkeypatch):
    monkeypatch.setattr(worker, "PIPELINE_MAX_EPOCH_S", 0.0)
    trial(6)
    assert [n - m["epoch"] for m, n in trial.tune.reports] == [0] * 6


def test_a_stopped_trial_trains_at_most_one_epoch_more_and_leaves_no_thread(trial):
    with pytest.raises(SystemExit):
        trial(30, epoch_s=0.005, stop_at=4)
    assert [m["epoch"] for m, _ in trial.tune.reports] == [1, 2, 3, 4]
    assert trial.trained in ([1, 2, 3, 4], [1, 2, 3, 4, 5])
    assert not trial.alive  # the next trial on this worker never trains beside it


def test_a_training_error_is_reported_with_its_reason_then_raised(trial):
    with pytest.raises(RuntimeError, match="loss is nan in epoch 3"):
        trial(8, fail_at=3)
    *epochs, (last, _) = trial.tune.reports
    assert [m["epoch"] for m, _ in epochs] == [1, 2]
    # The last line and where it was raised: a user's own loop is found by its file:line.
    assert last["error"].startswith("RuntimeError: loss is nan in epoch 3 (")
    assert last["error"].endswith(f"{__file__}:{_RAISE_LINE})")
    assert last["epoch"] == 2 and last["val_acc"] == 0.02 and not trial.alive
