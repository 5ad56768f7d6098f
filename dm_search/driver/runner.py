"""Run a study on Ray Tune: the driver (its trials run in ``worker``).

``run_study(spec)`` connects to Ray (locally or at an address), opens the study database, and
runs the remaining trials with ``OptunaSearch`` (storage = the study's RDBStorage, explicit
study name) under a concurrency limit and an early-stopping scheduler. Each Ray trial calls
``run_trial`` and reports every epoch with ``ray.tune.report``; the driver records each trial's
epochs, stop reason, diagnostics and node in the database as they arrive. Afterwards the
optional final stage retrains the best configuration and plain cross-entropy on the full
training set over several seeds.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import shlex
import signal
import socket
import statistics
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import ray
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import TrialState
from ray import tune
from ray.tune.progress_reporter import TrialProgressCallback
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.search.optuna import OptunaSearch

from dm_search import storage as st
from dm_search.common.labels import final_stage_line, final_warning, loss_label, lr_range_line
from dm_search.common.paths import folder_problem
from dm_search.driver import race as racing_stage
from dm_search.driver import worker
from dm_search.edf import EDF
from dm_search.results import dashboard, figures
from dm_search.study import racing
from dm_search.study.space import (
    family_due,
    grid_points,
    make_sampler,
    make_space,
    trial_config_for,
    warm_start_points,
)
from dm_search.study.spec import StudySpec
from dm_search.study.stopping import MedianRule, NoStopping, RungRule, StoppingRule
from dm_search.training.config import ConfigError, TrialConfig, dump_yaml
from dm_search.training.trainer import METRICS, check_config

__all__ = ["ClusterUnavailable", "StudyInterrupted", "StudyOutcome", "run_study",
           "submit_detached"]

METRIC = worker.METRIC
ENV_SPEC = "DM_SEARCH_SPEC_YAML"


class ClusterUnavailable(ConfigError):
    """The Ray cluster cannot be reached."""


class StudyInterrupted(Exception):
    """Ctrl-C or SIGTERM stopped the study; what completed is kept and it can be resumed."""

    def __init__(self, signum: int, summary: dict[str, Any], marked: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.summary = summary
        self.marked = marked  # running trials recorded as interrupted

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process killed by the signal


class _Stop(tune.Stopper):
    """The first Ctrl-C asks Tune to stop every trial at its next step (SIGTERM stops at once,
    see _stopping_on_signals); what was running is then recorded as interrupted, to be run
    again on resume."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.in_tune = False  # outside Tune's loop nothing would see the request: stop at once

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.signum is not None


@contextmanager
def _stopping_on_signals(stop: _Stop, say: Callable[[str], None]) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def handle(signum: int, frame: Any) -> None:
        # SIGTERM stops at once: a process manager sends it to the whole group, so Ray's own
        # processes are going too and nothing would be left to stop the trials gracefully.
        if stop.signum is not None or not stop.in_tune or signum == signal.SIGTERM:
            stop.signum = stop.signum or signum
            raise KeyboardInterrupt  # the second Ctrl-C: stop now, without waiting for Tune
        stop.signum = signum
        say(f"{signal.Signals(signum).name} received: stopping the running trials; completed "
            "ones are kept. Press Ctrl-C again to stop at once.")

    old = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


class _Heartbeat(threading.Thread):
    """Writes the driver's heartbeat into the study, so that `status` can tell a running
    study from one whose driver is gone."""

    def __init__(self, study: optuna.Study, command: str | None) -> None:
        super().__init__(name="dm-search-heartbeat", daemon=True)
        self.study = study
        self.command = command
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(st.HEARTBEAT_S):
            with suppress(Exception):  # a database hiccup costs one beat, never the study
                st.record_driver(self.study, "running", self.command)

    def finish(self, state: str) -> None:
        self.done.set()
        self.join(timeout=5)
        with suppress(Exception):
            st.record_driver(self.study, state, self.command)


# ------------------------------------------------------------------ the driver
@dataclass
class Progress:
    """Counts the driver keeps for the live progress line and the summary."""

    total: int
    started_at: float = field(default_factory=time.monotonic)
    running: set[int] = field(default_factory=set)
    finished: int = 0
    early: int = 0
    failed: int = 0
    wall_s: dict[int, float] = field(default_factory=dict)  # trial number -> start to end
    best: tuple[float, int, str] | None = None  # (value, -number, label): ties go to the first

    @property
    def done(self) -> int:
        return self.finished + self.early + self.failed

    def eta_s(self, concurrency: int) -> float | None:
        if not self.wall_s:
            return None
        left = max(self.total - self.done, 0)
        return statistics.mean(self.wall_s.values()) * math.ceil(left / max(concurrency, 1))


def _hms(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return str(dt.timedelta(seconds=round(seconds)))


def _edf_label(cfg: dict[str, Any]) -> str:
    return loss_label(cfg["loss"])


class _Recorder(tune.Callback):
    """Writes each trial's progress into the study database while the trial is still running
    (Optuna refuses updates to finished trials) and prints the progress line."""

    def __init__(self, study: optuna.Study, progress: Progress, concurrency: int,
                 say: Callable[[str], None], artifacts: Any, stop: _Stop | None = None) -> None:
        self.study = study
        self.stop = stop or _Stop()
        self.artifacts = artifacts
        self.last_refresh = 0.0
        self.storage = study._storage
        self.study_id = study._study_id
        self.progress = progress
        self.concurrency = concurrency
        self.say = say
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
                f"{_hms(elapsed)} | eta {_hms(p.eta_s(self.concurrency))}")

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        number = self._number(trial)
        self.progress.running.add(number)
        self.started[number] = time.monotonic()
        if trial.config.get("duplicate_of") is not None:
            return
        ref = " (reference)" if trial.config.get("reference") else ""
        self.say(f"trial {number} started{ref}: {_edf_label(trial.config['trial_config'])}")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        if trial.config.get("duplicate_of") is not None:
            return  # not trained: its record was written when it was suggested
        number = self._number(trial)
        tid = self._trial_id(number)
        if "error" in result:
            st.record_failure(self.storage, tid, result["error"])
            return
        epoch, total = int(result["epoch"]), int(result["total_epochs"])
        hist = self.history.setdefault(number, [])
        if epoch <= len(hist):
            del hist[epoch - 1:]  # retried (max_failures) after a lost node: it starts over
        hist.append({k: _num(result.get(k)) for k in METRICS})
        node = None
        if len(hist) == 1:
            node = {"ip": result.get("node_ip"), "id": result.get("node_id"),
                    **_hardware(result.get("node_hardware"))}
            if not self.fingerprint_saved:
                st.record_dataset(self.study, result.get("fingerprint"), result.get("noise_rate"))
                self.fingerprint_saved = True
        reason = st.record_epoch(self.storage, tid, epoch=epoch, total=total, history=hist,
                                 node=node)
        if reason == st.FINISHED or result.get("done"):
            # The trial's last moment as a running trial: artifacts need one.
            label = _edf_label(trial.config["trial_config"])
            _render_later(number, lambda: dashboard.upload_figure(
                optuna.trial.Trial(self.study, tid),
                figures.plot_trial_curves(hist, f"trial {number}: {label}"),
                "learning_curves.svg", self.artifacts))
        if reason == st.EARLY and result.get("done"):
            # Stopped by the scheduler: record it as PRUNED (with this last epoch's value), so
            # that Optuna, its samplers and the dashboard never take it for a full-budget
            # result. Ray's searcher then finds the trial finished and only logs that.
            self.storage.set_trial_intermediate_value(tid, epoch, float(result[METRIC]))
            _render_done(number)
            self.study.tell(number, state=optuna.trial.TrialState.PRUNED)

    def _refresh(self, number: int, force: bool = False) -> None:
        """The trial's note now; the study figures at most every 10 s (and at the end)."""
        def work() -> None:
            dashboard.save_trial_note(self.study, self.storage.get_trial(self._trial_id(number)))
            if force or time.monotonic() - self.last_refresh > 10:
                dashboard.update_dashboard(self.study, notes=False)
                self.last_refresh = time.monotonic()

        _refresh_later(work)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        _refresh_later(lambda: dashboard.update_dashboard(self.study, notes=False))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        number = self._number(trial)
        self.progress.running.discard(number)
        self.progress.wall_s[number] = time.monotonic() - self.started.get(number, 0.0)
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
            return
        if total and epoch >= total:
            self.progress.finished += 1
            what = "finished"
            if trial.config.get("reference"):
                what = "finished (reference)"
            elif value is not None and (self.progress.best is None
                                        or (value, -number) > self.progress.best[:2]):
                self.progress.best = (value, -number, _edf_label(trial.config["trial_config"]))
        else:
            self.progress.early += 1
            what = "early-stopped"
        self.say(f"trial {number} {what}: val_acc {_num(value):.4f} after {epoch}/{total} epochs"
                 f" | {self._line()}")
        self._refresh(number)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        number = self._number(trial)
        self.progress.running.discard(number)
        if self.stop.signum is not None:
            self.say(f"trial {number} interrupted: it runs again on resume")
            return
        self.progress.failed += 1
        error = (trial.last_result or {}).get("error", "see the Ray logs")
        self.say(f"trial {number} failed: {error} | {self._line()}")
        self._refresh(number)


def _hardware(text: Any) -> dict[str, Any]:
    """A trial's machine, as its worker reported it (a JSON string; nothing from an old
    worker)."""
    try:
        got = json.loads(text) if isinstance(text, str) else {}
    except ValueError:
        return {}
    return got if isinstance(got, dict) else {}


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


class _RecordingSpace:
    """Wraps the search space: records each trial's resolved config on the Optuna trial,
    has its EDF curve drawn for the dashboard (off the sampler's path: see _render_later), and
    passes the trial number to the Ray trial. A class so that Ray can pickle it."""

    def __init__(self, space: Callable[[Any], dict[str, Any]], artifacts: Any) -> None:
        self.space = space
        self.artifacts = artifacts

    def __call__(self, trial: Any) -> dict[str, Any]:
        out = self.space(trial)
        cfg = out["trial_config"]
        edf = EDF.from_config(cfg["loss"]["edf"])
        st.record_trial_config(trial, cfg)
        out["optuna_trial"] = trial.number
        raw = getattr(trial, "ot_trial", trial)
        twin = st.find_twin(getattr(raw, "study", None), cfg, trial.number)
        if twin is not None:
            # Never train one configuration twice: the copy takes its twin's result as a
            # pruned trial (samplers still learn from the value) and the Ray trial returns.
            st.record_duplicate(raw, twin)
            out["duplicate_of"] = twin.number
            return out
        end = cfg["loss"].get("edf_end")
        edfs = [edf, EDF.from_config(end)] if end else [edf]
        what = "start and end" if end else repr(edf)
        _render_later(trial.number, lambda: dashboard.upload_figure(
            raw,
            figures.plot_edf_curves(figures.edf_curves_info([*edfs, EDF("cce")]),
                                   title=f"trial {trial.number}: {what} against CE"),
            "edf_curve.svg", self.artifacts))
        return out


def _attach(upload: Callable[[], None]) -> None:
    # A picture for the dashboard is worth a warning, never a failed study.
    try:
        upload()
    except Exception as err:
        warnings.warn(f"could not attach a figure for the dashboard: {err}", stacklevel=2)


# Drawing a trial's figures (plotly, then kaleido's SVG export: 0.1-0.2 s each, over a second
# for the first one of a process) used to hold up the sampler and the driver's loop, so every
# trial started that much later. One thread draws them in turn while the trials run; a trial
# is told to Optuna only once its figures are attached, because Optuna refuses artifacts on
# finished trials.
_RENDER_POOL: ThreadPoolExecutor | None = None
_RENDERS: dict[int, list[Future[None]]] = {}
RENDER_WAIT_S = 30.0


def _render_later(number: int, upload: Callable[[], None]) -> None:
    global _RENDER_POOL
    if _RENDER_POOL is None:
        _RENDER_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dm-search-figure")
    _RENDERS.setdefault(number, []).append(_RENDER_POOL.submit(_attach, upload))


# The trial notes and the study's figures (0.5 s for a study figure refresh) are drawn by a
# thread of their own, so that neither the next trial's start nor a trial's figures wait for
# them; the study waits for them before it returns (_refreshes_done).
_REFRESH_POOL: ThreadPoolExecutor | None = None
_REFRESHES: list[Future[None]] = []


def _refresh_later(work: Callable[[], None]) -> None:
    global _REFRESH_POOL
    if _REFRESH_POOL is None:
        _REFRESH_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dm-search-note")
    _REFRESHES[:] = [f for f in _REFRESHES if not f.done()]
    _REFRESHES.append(_REFRESH_POOL.submit(_attach, work))


def _refreshes_done() -> None:
    while _REFRESHES:
        with suppress(FutureTimeout):
            _REFRESHES.pop(0).result(timeout=RENDER_WAIT_S)


def _render_done(number: int | None) -> None:
    """Wait (at most RENDER_WAIT_S each) for trial ``number``'s figures to be attached."""
    for fut in _RENDERS.pop(number, []) if number is not None else []:
        try:
            fut.result(timeout=RENDER_WAIT_S)
        except FutureTimeout:
            warnings.warn(f"trial {number}'s figure for the dashboard took over "
                          f"{RENDER_WAIT_S:g} s to draw; the trial is recorded without it",
                          stacklevel=2)


class _QuietProgress(TrialProgressCallback):
    """Stands in for Tune's own progress printer, whose "Trial ... completed. Last result"
    dumps would interleave with the study's progress line."""

    def _print(self, msg: str) -> None:
        pass


class _RuleScheduler(FIFOScheduler):
    """A :mod:`dm_search.study.stopping` rule as a Tune scheduler. The rule is built at the first
    result, when the trials' budget in epochs is known (an iteration budget gives it only
    then), and is first shown the curves of the trials already in the study, so that a
    resumed study's rungs keep their bars. Reference trials are never stopped and never set a
    bar for the others."""

    def __init__(self, spec: StudySpec, past: list[list[float]] | None = None) -> None:
        super().__init__()
        self.spec = spec.scheduler
        self.past = past or []
        self.rule: StoppingRule | None = None

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True

    def _make(self, budget: int) -> StoppingRule:
        s = self.spec
        grace = s.grace_epochs(budget)
        if s.name == "rung":
            return RungRule(budget, grace, s.reduction_factor, min_trials=s.min_trials,
                            trend=s.trend, window=s.trend_window)
        if s.name == "asha":
            return RungRule(budget, grace, s.reduction_factor)
        if s.name == "median":
            return MedianRule(grace)
        return NoStopping()

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if trial.config.get("reference") or "error" in result or METRIC not in result:
            return TrialScheduler.CONTINUE
        if self.rule is None:
            self.rule = self._make(int(result.get("total_epochs") or 1))
            for k, curve in enumerate(self.past):
                for epoch, v in enumerate(curve, 1):
                    self.rule.on_result(f"past-{k}", epoch, v)
                self.rule.forget(f"past-{k}")
        value = _num(result[METRIC])
        go_on = self.rule.on_result(trial.trial_id, int(result["epoch"]), value)
        return TrialScheduler.CONTINUE if go_on else TrialScheduler.STOP

    def _forget(self, trial: Any) -> None:
        if self.rule is not None:
            self.rule.forget(trial.trial_id)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self._forget(trial)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self._forget(trial)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._forget(trial)


class _StudySearcher(Searcher):
    """Wraps the Optuna searcher with what a study adds to it: the reference baselines run
    first, once each (a resumed study skips the ones on record), and with ``budget_epochs``
    a trial starts only while the epochs trained, those the running trials may still need and
    its own full length fit in the budget."""

    def __init__(self, inner: Searcher, spec: StudySpec, study: optuna.Study,
                 stop: _Stop | None = None) -> None:
        super().__init__(metric=METRIC, mode="max")
        self.inner = inner
        self.stop = stop or _Stop()
        self.spec = spec
        self.study = study
        self.pending = st.missing_references(study, spec)
        self.references: dict[str, int] = {}  # Ray trial id -> Optuna trial number
        self.numbers: dict[str, int | None] = {}  # the same, for searched trials
        self.budget = spec.search_budget()  # the races' reserve is not the search's
        self.used = st.search_epochs(study)
        self.progress: dict[str, tuple[int, int]] = {}  # running: (epochs done, total)
        # Epochs of one full trial; an iteration budget knows it only at the first result.
        self.per_trial = spec.total_epochs() or 1

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        return bool(self.inner.set_search_properties(metric, mode, config, **spec))

    def _committed(self) -> int:
        return sum(total - done if total else self.per_trial
                   for done, total in self.progress.values())

    def suggest(self, trial_id: str) -> dict | None:
        if self.budget is not None:
            # A trial starts only if the budget holds it at full length on top of what the
            # running trials may still need; the study never trains more than its budget.
            if self.used + self.per_trial > self.budget:
                return Searcher.FINISHED  # type: ignore[return-value]  # Ray's own sentinel
            if self.used + self._committed() + self.per_trial > self.budget:
                return None  # wait: a running trial may be stopped early and free budget
        if self.pending:
            edf = self.pending.pop(0)
            cfg = trial_config_for(self.spec, edf).to_dict()
            number = st.new_reference_trial(self.study, cfg).number
            self.references[trial_id] = number
            self.progress[trial_id] = (0, 0)
            return {"trial_config": cfg, "optuna_trial": number, "reference": True}
        due = family_due(self.spec, self.study)
        if due is not None:
            # The sampler still picks the point; only the family is set for it.
            self.study.enqueue_trial({"family": due}, skip_if_exists=False)
        out = self.inner.suggest(trial_id)
        if isinstance(out, dict):
            self.progress[trial_id] = (0, 0)
            self.numbers[trial_id] = out.get("optuna_trial")
        return out

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if "epoch" in result and "error" not in result:
            done = int(result["epoch"])
            before = self.progress.get(trial_id, (0, 0))[0]
            # A retried trial starts over at epoch 1: its new epochs count again.
            self.used += done - before if done > before else done
            self.progress[trial_id] = (done, int(result.get("total_epochs") or 0))
        if trial_id not in self.references:
            self.inner.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        done, total = self.progress.pop(trial_id, (0, 0))
        number = self.numbers.pop(trial_id, None)
        if self.stop.signum is not None and not (total and done >= total):
            # Cut short by Ctrl-C or SIGTERM: its partial value is no result. It stays
            # running in the database until the driver records it as interrupted.
            self.references.pop(trial_id, None)
            return
        if trial_id in self.references:
            value = None if error or not result else result.get(METRIC)
            _render_done(self.references[trial_id])
            st.finish_reference_trial(self.study, self.references.pop(trial_id), value)
        else:
            _render_done(number)  # attached while the trial still runs in Optuna's eyes
            self.inner.on_trial_complete(trial_id, result=result, error=error)


def _check_reachable(address: str) -> None:
    """Fail in seconds on a closed port: ray.init itself retries for minutes."""
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterUnavailable(f"Ray address {address!r} must look like HOST:PORT (or auto)")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as err:
        raise ClusterUnavailable(
            f"cannot connect to the Ray cluster at {address!r}: {err}. Start one with `ray "
            "start --head` (then use --address auto or HOST:6379), or leave --address out to "
            "run on this machine."
        ) from None


def connect_ray(address: str | None, num_cpus: int | None = None) -> None:
    """ray.init locally (this machine's CPUs) or at ``address``; clear error if unreachable."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": True,
                              "logging_level": "ERROR"}
    # Its "trial already finished" warning follows our own PRUNED record of early stops.
    logging.getLogger("ray.tune.search.optuna.optuna_search").setLevel(logging.ERROR)
    # The study reports failed trials itself, one line each, and decides its exit code.
    logging.getLogger("ray.tune.tune").addFilter(
        lambda record: not record.getMessage().startswith("Trials did not complete"))
    if address and address not in ("auto", "local"):
        _check_reachable(address)
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            # "local": a new Ray on this machine, never a cluster that happens to be running here
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **kwargs)
    except Exception as err:  # Ray raises bare Exceptions too (a start-up that timed out)
        if not address:
            raise ClusterUnavailable(
                f"Ray could not start on this machine: {str(err).splitlines()[0]}. A busy "
                "machine can make its start time out: try again, or run `ray stop --force` "
                "first if an earlier Ray is still running."
            ) from None
        raise ClusterUnavailable(
            f"cannot connect to the Ray cluster at {address!r}: {str(err).splitlines()[0]}. "
            "Start one with `ray start --head` (then use --address auto or HOST:6379), or leave "
            "--address out to run on this machine."
        ) from None


class ResourcesUnavailable(ConfigError):
    """No node of the cluster can hold one trial."""


def _largest(nodes: list[dict[str, float]]) -> str:
    cpu = max((n.get("CPU", 0.0) for n in nodes), default=0.0)
    gpu = max((n.get("GPU", 0.0) for n in nodes), default=0.0)
    return f"{cpu:g} CPU and {gpu:g} GPU"


def _check_resources(spec: StudySpec, address: str | None, say: Callable[[str], None],
                     poll_s: float = 5.0) -> None:
    """Fail fast when no node can ever hold a trial: Tune would wait for it forever. A
    cluster may still add nodes, so there the study waits up to ``resources.wait_s``."""
    r = spec.resources
    need = {"CPU": r.cpu, **({"GPU": r.gpu} if r.gpu > 0 else {})}
    asked = f"{r.cpu:g} CPU and {r.gpu:g} GPU per trial"

    def nodes() -> list[dict[str, float]]:
        return [n["Resources"] for n in ray.nodes() if n.get("Alive")]

    def fits(ns: list[dict[str, float]]) -> bool:
        return any(all(n.get(k, 0.0) >= v for k, v in need.items()) for n in ns)

    now = nodes()
    if fits(now):
        return
    fix = ("Lower resources.cpu / resources.gpu in the spec (gpu: 0 trains on the CPU; a "
           "fraction such as 0.5 shares a GPU)")
    if not address or address == "local":
        raise ResourcesUnavailable(f"a trial asks for {asked}, but this machine has "
                                   f"{_largest(now)}. {fix}.")
    say(f"waiting for resources: a trial asks for {asked}; the largest node of the cluster has "
        f"{_largest(now)} (waiting up to {r.wait_s:g} s, resources.wait_s)")
    deadline = time.monotonic() + r.wait_s
    while time.monotonic() < deadline:
        time.sleep(min(poll_s, max(deadline - time.monotonic(), 0.0)))
        now = nodes()
        if fits(now):
            say("resources available: starting")
            return
    raise ResourcesUnavailable(f"no node of the cluster could hold a trial after "
                               f"{r.wait_s:g} s: a trial asks for {asked}, the largest node has "
                               f"{_largest(now)}. {fix}, or add such a node.")


def leave_ray(timeout_s: float = 5.0) -> None:
    """Shut Ray down, but never wait on it for more than ``timeout_s``: after a SIGTERM to the
    whole process group its processes are gone, and its own shutdown would wait a minute for
    them."""
    done = threading.Thread(target=ray.shutdown, daemon=True)
    done.start()
    done.join(timeout_s)


@dataclass
class StudyOutcome:
    name: str
    created: bool
    repaired: int
    ran: int
    summary: dict[str, Any]
    trial_wall_s: dict[int, float] = field(default_factory=dict)  # as seen by the driver
    search_s: float = 0.0


def run_study(
    spec: StudySpec,
    *,
    storage_url: str | None = None,
    address: str | None = None,
    resume: st.Resume | bool = False,
    say: Callable[[str], None] = print,
    resume_command: str | None = None,
) -> StudyOutcome:
    """Run (or resume) ``spec`` to completion and return the study summary.

    Raises ConfigError subclasses (StorageUnavailable, StudyClash, ClusterUnavailable) before
    anything is written when the database, the study name or the cluster is unusable, and
    StudyInterrupted after Ctrl-C or SIGTERM (the trials that were running are recorded as
    interrupted). ``resume_command`` is recorded with the driver's heartbeat for `status`.
    """
    # Optuna's own INFO lines ("A new study created ...") would interleave with the progress.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        check_config(spec.base_config())  # an unknown dataset would fail every trial
    except ConfigError as err:
        raise ConfigError(f"spec {spec.name!r}, base.{err}") from None
    url = st.resolve_url(storage_url, spec)
    # Tune pickles what it is handed to disk: from here on the URL (and any password in it)
    # lives only in the sealed storage.
    spec = spec.model_copy(update={"storage": None})
    st.check_submission_at(url, spec, resume=resume)  # before starting Ray (slow)
    study_dir = Path(spec.study_dir)
    problem = folder_problem(study_dir)
    if problem:
        raise ConfigError(f"study_dir {str(study_dir)!r} cannot hold the study's files "
                          f"({problem}); set study_dir in the spec (or $DM_SEARCH_STUDY_DIR) to "
                          "a writable folder")
    connect_ray(address)
    _check_resources(spec, address, say)
    storage = st.open_storage(url)
    opened = st.open_study(storage, spec, resume=resume)
    study = opened.study
    say(f"study {spec.name!r} in {st.mask_url(url)}: "
        + ("created" if opened.created else
           f"resumed with {opened.done} trial(s) done, {opened.repaired} interrupted one(s) "
           "marked failed"))
    stop = _Stop()
    heartbeat = _Heartbeat(study, resume_command)
    st.record_driver(study, "running", resume_command)
    heartbeat.start()
    try:
        with _stopping_on_signals(stop, say):
            outcome = _drive(spec, study, storage, opened, stop, say)
    except KeyboardInterrupt:
        marked = st.repair_interrupted(study)
        heartbeat.finish("interrupted")
        raise StudyInterrupted(stop.signum or signal.SIGINT, st.study_summary(study),
                               marked) from None
    except BaseException:
        heartbeat.finish("failed")
        raise
    heartbeat.finish("done")
    return outcome


def _drive(spec: StudySpec, study: optuna.Study, storage: Any, opened: st.Opened, stop: _Stop,
           say: Callable[[str], None]) -> StudyOutcome:
    """The study's trials, then its final stage; KeyboardInterrupt after a stop request."""
    if opened.created:
        points = grid_points(spec) if spec.sampler.name == "grid" else []
        if spec.warm_start:
            points += warm_start_points(spec)
        # Never more than the budget: an enqueued point that never runs would wait forever.
        for p in points[: spec.n_trials]:
            study.enqueue_trial(p, skip_if_exists=True)

    remaining = spec.n_trials - opened.done
    missing = st.missing_references(study, spec)
    progress = Progress(total=spec.n_trials + len(spec.baselines))
    t0 = time.monotonic()
    search_budget = spec.search_budget()
    over_budget = search_budget is not None and st.search_epochs(study) >= search_budget
    if over_budget and not missing:
        say(f"the search's budget of {search_budget} epochs is spent")
    elif remaining > 0 or missing:
        _search(spec, study, storage, max(remaining, 0), progress, say, stop)
        if stop.signum is not None:
            raise KeyboardInterrupt
        if spec.budget_epochs is not None and st.counted_trials(study) < spec.n_trials:
            waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
            held = (f" (the races hold the rest of the {spec.budget_epochs})"
                    if search_budget != spec.budget_epochs else "")
            say(f"stopped at the budget: {st.search_epochs(study)} of {search_budget} "
                f"epochs trained{held}" + (f"; {waiting} queued trial(s) wait for a resume "
                                           "with a larger budget_epochs" if waiting else ""))
    else:
        say(f"all {spec.n_trials} trials are done")
    search_s = time.monotonic() - t0
    if spec.race.enabled:
        racing_stage.run_race(spec, study, say)
    if spec.final.enabled:
        _final_stage(spec, study, say)
    _refreshes_done()
    _attach(lambda: dashboard.update_dashboard(study))
    return StudyOutcome(spec.name, opened.created, opened.repaired, max(remaining, 0),
                        st.study_summary(study), progress.wall_s, search_s)


def _search(spec: StudySpec, study: optuna.Study, storage: Any, remaining: int,
            progress: Progress, say: Callable[[str], None], stop: _Stop) -> None:
    artifact_path = st.artifact_dir(st.resolve_url(None, spec), spec.study_dir)
    assert artifact_path is not None
    artifact_path.mkdir(parents=True, exist_ok=True)
    artifacts = FileSystemArtifactStore(str(artifact_path))
    ray_path = Path(spec.study_dir).resolve() / "ray"
    st.record_locations(study, artifact_path, ray_path)
    define = _RecordingSpace(make_space(spec), artifacts)

    # The sampler is seeded past the trials already in the study, so that a resumed study
    # does not repeat its first suggestions.
    sampler = make_sampler(spec, seed_offset=len(study.trials))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        searcher = OptunaSearch(space=define, metric=METRIC, mode="max", sampler=sampler,
                                study_name=spec.name, storage=storage)
    study_searcher = _StudySearcher(searcher, spec, study, stop)
    search_alg = ConcurrencyLimiter(study_searcher, max_concurrent=spec.max_concurrent)
    # Non-default searchers get one pending trial at a time unless told otherwise, which
    # would serialise the study.
    os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(spec.max_concurrent)
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # A duplicate trial returns without training, so its only result has no val_acc.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    # A failed trial gets one line with its reason from the recorder; Ray's traceback stays in
    # the trial's error file under the study directory.
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # A resumed study's progress line starts from what the database already holds.
    for t in study.get_trials(deepcopy=False):
        reason = st.stop_reason(t)
        if reason == st.FINISHED:
            progress.finished += 1
        elif reason == st.EARLY or reason.startswith("duplicate"):
            progress.early += 1
        elif reason.startswith("failed") and reason != st.INTERRUPTED:
            progress.failed += 1
    recorder = _Recorder(study, progress, spec.max_concurrent, say, artifacts, stop)
    # Ctrl-C and SIGTERM are the study's to handle (see _stopping_on_signals): Tune's own
    # handler would print how to restore a Tune run, which is not how a study resumes.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    resources = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    tuner = tune.Tuner(
        tune.with_resources(worker.trainable, resources),
        tune_config=tune.TuneConfig(search_alg=search_alg,
                                    scheduler=_RuleScheduler(spec, st.past_curves(study)),
                                    num_samples=remaining + len(study_searcher.pending),
                                    reuse_actors=True),
        run_config=tune.RunConfig(
            name=f"{spec.name}-{stamp}",
            storage_path=str(ray_path),
            verbose=0,
            callbacks=[recorder, _QuietProgress()],
            stop=stop,
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        ),
    )
    refs = f" and {len(study_searcher.pending)} reference(s)" if study_searcher.pending else ""
    say(f"running {remaining} trial(s){refs}, up to {spec.max_concurrent} at a time, "
        f"{resources['cpu']:g} CPU / {resources['gpu']:g} GPU each")
    stop.in_tune = True
    try:
        tuner.fit()
    finally:
        stop.in_tune = False


def _final_stage(spec: StudySpec, study: optuna.Study, say: Callable[[str], None]) -> None:
    best = st.best_trial(study)
    if best is None:
        say("final stage skipped: no trial ran its full budget")
        return
    done = st.final_stage(study)
    done_factors = [r["factor"] for r in (done or {}).get("lr_sensitivity") or [] if
                    r["factor"] != 1.0]
    if done and done.get("best", {}).get("trial") == best.number and \
            done.get("seeds") == spec.final.seeds and \
            tuple(done_factors) == spec.final.lr_factors:
        say("final stage already done for the current best trial")
        return
    best_cfg = TrialConfig.from_dict(st.trial_config(best))
    # The CE the best is compared with: the study's CE reference where it has one (the same
    # recipe it was measured with during the search), else plain CE on the base config.
    ce_ref = next((t for t in st.reference_trials(study)
                   if (st.trial_edf(t) or {}).get("family") == "cce"), None)
    ce_cfg = (TrialConfig.from_dict(st.trial_config(ce_ref)) if ce_ref is not None
              else trial_config_for(spec, EDF("cce")))

    def full(cfg: TrialConfig, seed: int, lr_factor: float = 1.0) -> dict[str, Any]:
        d = cfg.to_dict()
        d["seed"] = seed
        d["data"] = {**d["data"], "val_fraction": 0.0}
        d["optim"] = {**d["optim"], "lr": cfg.optim.lr * lr_factor}
        return d

    f = spec.final
    say(f"final stage: retraining trial {best.number} ({_edf_label(best_cfg.to_dict())}) and "
        f"plain CE on the full training set, {f.seeds} seed(s) each"
        + (f"; then at lr x {', '.join(f'{x:g}' for x in f.lr_factors)} "
           f"({f.lr_seeds} seed(s) each)" if f.lr_factors else ""))
    task = ray.remote(worker.final_run).options(num_cpus=spec.resources.cpu,
                                          num_gpus=spec.resources.gpu)
    # Everything is submitted at once, so that the runs share the cluster's slots.
    refs_best = [task.remote(full(best_cfg, s)) for s in range(f.seeds)]
    refs_ce = [task.remote(full(ce_cfg, s)) for s in range(f.seeds)]
    refs_lr = {x: ([task.remote(full(best_cfg, s, x)) for s in range(f.lr_seeds)],
                   [task.remote(full(ce_cfg, s, x)) for s in range(f.lr_seeds)])
               for x in f.lr_factors}
    runs_best: list[dict[str, Any]] = ray.get(refs_best)
    runs_ce: list[dict[str, Any]] = ray.get(refs_ce)

    def agg(runs: list[dict[str, Any]]) -> dict[str, Any]:
        acc = [r["test_acc"] for r in runs]
        return {"runs": runs, "test_acc_mean": statistics.mean(acc),
                "test_acc_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                "spread": round(racing.spread(acc), 3), "unstable": racing.unstable(acc)}

    result: dict[str, Any] = {
        "seeds": f.seeds,
        "unstable_points": racing.UNSTABLE_POINTS,
        "best": {"trial": best.number, "edf": best_cfg.loss.edf,
                 **({"edf_end": best_cfg.loss.edf_end,
                     "ramp": best_cfg.to_dict()["loss"]["ramp"]} if best_cfg.loss.edf_end
                    else {}),
                 **agg(runs_best)},
        "ce": {"edf": {"family": "cce"}, **agg(runs_ce)},
    }
    result["gain"] = result["best"]["test_acc_mean"] - result["ce"]["test_acc_mean"]
    if f.lr_factors:
        rows = [{"factor": 1.0, "lr_best": best_cfg.optim.lr, "lr_ce": ce_cfg.optim.lr,
                 "best": result["best"]["test_acc_mean"], "ce": result["ce"]["test_acc_mean"],
                 "seeds": f.seeds}]
        for x, (rb, rc) in refs_lr.items():
            b, c = agg(ray.get(rb)), agg(ray.get(rc))
            rows.append({"factor": x, "lr_best": best_cfg.optim.lr * x,
                         "lr_ce": ce_cfg.optim.lr * x, "best": b["test_acc_mean"],
                         "ce": c["test_acc_mean"], "seeds": f.lr_seeds})
        result["lr_sensitivity"] = sorted(rows, key=lambda r: r["factor"])
    st.record_final_stage(study, result)
    say(final_stage_line(result))
    warning = final_warning(result)
    if warning:
        say(warning)
    line = lr_range_line(result)
    if line:
        say(line)


def submit_detached(spec: StudySpec, *, address: str, storage_url: str | None,
                    resume: st.Resume | bool) -> str:
    """Send ``dm-search submit`` to a running Ray cluster as a Ray Job; returns the job id.

    ``address`` is the cluster's job-submission (dashboard) address, e.g. http://HOST:8265.
    The storage URL travels in the job's environment, not on its command line.
    """
    from ray.job_submission import JobSubmissionClient

    try:
        client = JobSubmissionClient(address)
    except Exception as err:
        raise ClusterUnavailable(
            f"cannot reach the Ray job server at {address!r}: {str(err).splitlines()[0]}. "
            "Use the dashboard address of a running cluster (http://HOST:8265)."
        ) from None
    # The resolved spec (base config inlined, no storage URL) travels in the job's environment:
    # no file to upload, and no working directory that Ray may clean up under the driver.
    resolved = spec.model_dump(mode="json", exclude={"storage"})
    env = {ENV_SPEC: dump_yaml(resolved)}
    if storage_url:
        env[st.ENV_STORAGE] = storage_url
    cmd = ["dm-search", "submit", f"env:{ENV_SPEC}", "--address", "auto"]
    if resume in (True, st.Resume.EXISTING):
        cmd.append("--resume")
    elif resume == st.Resume.EITHER:
        cmd.append("--resume-if-exists")
    return str(client.submit_job(entrypoint=shlex.join(cmd), runtime_env={"env_vars": env}))
