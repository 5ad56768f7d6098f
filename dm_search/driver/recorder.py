"""The Tune callback that records every trial's epochs, stop reason and node in the study
database as they arrive, and prints the study's progress line."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

import optuna
from ray import tune

from dm_search import storage as st
from dm_search.driver.progress import Progress, config_label, hms
from dm_search.driver.rendering import refresh_later, render_done, render_later
from dm_search.driver.signals import StopRequest
from dm_search.driver.worker import METRIC
from dm_search.results import dashboard, learning
from dm_search.results.tracking import Tracking, trial_params
from dm_search.training.trainer import METRICS

__all__ = ["Recorder", "as_number"]


class Recorder(tune.Callback):
    """Writes each trial's progress into the study database while the trial is still running
    (Optuna refuses updates to finished trials) and prints the progress line."""

    def __init__(self, study: optuna.Study, progress: Progress, concurrency: int,
                 say: Callable[[str], None], artifacts: Any,
                 stop: StopRequest | None = None, *, tracker: Tracking | None = None,
                 searched: list[str] | None = None, writer: st.EpochWriter) -> None:
        self.study = study
        # Epochs go to the writer's thread: Tune's loop only queues them.
        self.writer = writer
        self.stop = stop or StopRequest()
        self.tracker = tracker or Tracking([], say)
        self.searched = searched or []
        self.artifacts = artifacts
        self.last_refresh = 0.0
        self.refresh_every = 10.0
        self.storage = study._storage
        self.study_id = study._study_id
        self.progress = progress
        self.concurrency = concurrency
        self.say = say
        # Running trials' epochs, for the learning-curve figure at their end: dropped when a
        # trial ends, so that the driver's memory follows the running trials, not the study.
        self.history: dict[int, list[dict[str, float]]] = {}
        self.started: dict[int, float] = {}
        self.trial_ids: dict[int, int] = {}
        self.fingerprint_saved = False

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment state; the database connection and
        # the console cannot travel, and a study resumes from the database, not from Tune.
        return {}

    @staticmethod
    def _number(trial: Any) -> int:
        return int(trial.config["optuna_trial"])

    def _trial_id(self, number: int) -> int:
        if number not in self.trial_ids:  # one lookup per trial, not one per epoch
            self.trial_ids[number] = self.storage.get_trial_id_from_study_id_trial_number(
                self.study_id, number)
        return self.trial_ids[number]

    def _line(self) -> str:
        p = self.progress
        best = f"best {p.best[0]:.4f} (trial {-p.best[1]}: {p.best[2]})" if p.best else "best -"
        elapsed = time.monotonic() - p.started_at
        return (f"done {p.done}/{p.total} | running {len(p.running)} | finished {p.finished} | "
                f"early-stopped {p.early} | failed {p.failed} | {best} | elapsed "
                f"{hms(elapsed)} | eta {hms(p.eta_s(self.concurrency))}")

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        number = self._number(trial)
        self.progress.running.add(number)
        self.started[number] = time.monotonic()
        if trial.config.get("duplicate_of") is not None:
            return
        ref = " (reference)" if trial.config.get("reference") else ""
        label = config_label(trial.config["trial_config"])
        self.say(f"trial {number} started{ref}: {label}")
        if self.tracker:
            self.tracker.trial_started(
                f"trial_{number}", "reference" if ref else "trial", f"trial {number}: {label}",
                trial_params(trial.config["trial_config"], self.searched))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        if trial.config.get("duplicate_of") is not None:
            return  # not trained: its record was written when it was suggested
        number = self._number(trial)
        tid = self._trial_id(number)
        if "error" in result:
            # A trial that failed before its first epoch (a loop of one's own that raised at
            # once) still says where it ran. Its epochs are written first: the failure is the
            # last word on the trial.
            first = not self.history.get(number)
            self.writer.flush()
            st.record_failure(self.storage, tid, result["error"],
                              node=_node(result) if first else None)
            return
        epoch, total = int(result["epoch"]), int(result["total_epochs"])
        hist = self.history.setdefault(number, [])
        restart = epoch <= len(hist)
        if restart:
            del hist[epoch - 1:]  # retried (max_failures) after a lost node: it starts over
        hist.append({k: as_number(result.get(k)) for k in METRICS})
        node = None
        if len(hist) == 1:
            node = _node(result)
            if not self.fingerprint_saved:
                st.record_dataset(self.study, result.get("fingerprint"), result.get("noise_rate"))
                self.fingerprint_saved = True
        # References are not the sampler's trials: they get no intermediate value.
        value = None if trial.config.get("reference") else as_number(result.get(METRIC))
        self.writer.put(st.EpochReport(
            tid, self.study_id, epoch, total, hist[-1], value=value, node=node, restart=restart,
            reported_at=result.get("reported_at")))
        reason = st.stop_after(epoch, total)
        self.tracker.epoch(f"trial_{number}", epoch, hist[-1])
        if reason == st.FINISHED or result.get("done"):
            # The trial's last moment as a running trial: artifacts need one.
            label = config_label(trial.config["trial_config"])
            render_later(number, lambda: dashboard.upload_figure(
                optuna.trial.Trial(self.study, tid),
                learning.plot_trial_curves(hist, f"trial {number}: {label}"),
                "learning_curves.svg", self.artifacts))
        if reason == st.EARLY and result.get("done"):
            # Stopped by the scheduler: record it as PRUNED (with this last epoch's value, the
            # writer's last intermediate value), so that Optuna, its samplers and the
            # dashboard never take it for a full-budget result. Ray's searcher then finds the
            # trial finished and only logs that.
            self.writer.flush()
            render_done(number)
            self.study.tell(number, state=optuna.trial.TrialState.PRUNED)

    def _refresh(self, number: int, force: bool = False) -> None:
        """The trial's note now; the study figures at most every 10 s (and at the end), and
        never more than a tenth of the time: drawing them grows with the study."""
        def work() -> None:
            dashboard.save_trial_note(self.study, self.storage.get_trial(self._trial_id(number)))
            if force or time.monotonic() - self.last_refresh > self.refresh_every:
                started = time.monotonic()
                dashboard.update_dashboard(self.study, notes=False)
                self.last_refresh = time.monotonic()
                self.refresh_every = max(10.0, 10 * (self.last_refresh - started))

        refresh_later(work)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        refresh_later(lambda: dashboard.update_dashboard(self.study, notes=False))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        number = self._number(trial)
        self.history.pop(number, None)
        self.progress.running.discard(number)
        self.progress.wall_s[number] = time.monotonic() - self.started.pop(number, 0.0)
        last = trial.last_result or {}
        epoch, total = int(last.get("epoch", 0)), int(last.get("total_epochs", 0) or 0)
        value = last.get(METRIC)
        twin = trial.config.get("duplicate_of")
        if twin is not None:
            self.progress.early += 1
            self.say(f"trial {number} repeats trial {twin}'s configuration: not trained again "
                     f"| {self._line()}")
            return
        if self.stop.signum is not None and not (total and epoch >= total):
            self.say(f"trial {number} interrupted after {epoch}/{total} epochs: it runs again "
                     "on resume")
            self.tracker.trial_ended(f"trial_{number}", st.INTERRUPTED, failed=True)
            return
        if total and epoch >= total:
            self.progress.finished += 1
            what = "finished"
            if trial.config.get("reference"):
                what = "finished (reference)"
            elif value is not None and (self.progress.best is None
                                        or (value, -number) > self.progress.best[:2]):
                self.progress.best = (value, -number, config_label(trial.config["trial_config"]))
        else:
            self.progress.early += 1
            what = "early-stopped"
        self.say(f"trial {number} {what}: val_acc {as_number(value):.4f} after "
                 f"{epoch}/{total} epochs | {self._line()}")
        self.tracker.trial_ended(f"trial_{number}", st.FINISHED if what.startswith("finished")
                                 else st.EARLY)
        self._refresh(number)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        number = self._number(trial)
        self.history.pop(number, None)
        self.progress.running.discard(number)
        if self.stop.signum is not None:
            self.say(f"trial {number} interrupted: it runs again on resume")
            self.tracker.trial_ended(f"trial_{number}", st.INTERRUPTED, failed=True)
            return
        self.progress.failed += 1
        error = (trial.last_result or {}).get("error", "see the Ray logs")
        self.say(f"trial {number} failed: {error} | {self._line()}")
        self.tracker.trial_ended(f"trial_{number}", f"failed: {error}"[:250], failed=True)
        self._refresh(number)


def _node(result: dict[str, Any]) -> dict[str, Any]:
    """Where a trial ran, from the extra fields of its reports."""
    return {"ip": result.get("node_ip"), "id": result.get("node_id"),
            **_hardware(result.get("node_hardware"))}


def _hardware(text: Any) -> dict[str, Any]:
    """A trial's machine, as its worker reported it (a JSON string; nothing from an old
    worker)."""
    try:
        got = json.loads(text) if isinstance(text, str) else {}
    except ValueError:
        return {}
    return got if isinstance(got, dict) else {}


def as_number(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan
