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
import os
import signal
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import TrialState
from ray import tune
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from dm_search import storage as st
from dm_search.common import plugins
from dm_search.common.paths import folder_problem
from dm_search.driver import race as racing_stage
from dm_search.driver import worker
from dm_search.driver.cluster import check_resources, code_environment, connect_ray
from dm_search.driver.final import run_final_stage
from dm_search.driver.progress import Progress, QuietProgress
from dm_search.driver.recorder import Recorder
from dm_search.driver.rendering import RecordingSpace, attach, refreshes_done
from dm_search.driver.scheduling import RuleScheduler, StudySearcher
from dm_search.driver.signals import Heartbeat, StopRequest, StudyInterrupted, stopping_on_signals
from dm_search.driver.tracked import check_tracking, end_tracking, start_tracking
from dm_search.results import dashboard
from dm_search.results.tracking import Tracking
from dm_search.study.space import grid_points, make_sampler, make_space, warm_start_points
from dm_search.study.spec import StudySpec
from dm_search.training.config import ConfigError
from dm_search.training.trainer import check_config

__all__ = ["StudyOutcome", "run_study"]

METRIC = worker.METRIC


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
    url = st.resolve_url(storage_url, spec)
    # Tune pickles what it is handed to disk: from here on the URL (and any password in it)
    # lives only in the sealed storage.
    spec = spec.model_copy(update={"storage": None})
    _check_before_ray(spec, url, resume)
    connect_ray(address, runtime_env=code_environment(spec.code, spec.study_dir))
    check_resources(spec, address, say)
    storage = st.open_storage(url)
    opened = st.open_study(storage, spec, resume=resume)
    study = opened.study
    say(f"study {spec.name!r} in {st.mask_url(url)}: "
        + ("created" if opened.created else
           f"resumed with {opened.done} trial(s) done, {opened.repaired} interrupted one(s) "
           "marked failed"))
    stop = StopRequest()
    heartbeat = Heartbeat(study, resume_command)
    st.record_driver(study, "running", resume_command)
    heartbeat.start()
    tracker = start_tracking(spec, say)
    writer = st.EpochWriter(storage, say=say)
    try:
        with stopping_on_signals(stop, say):
            outcome = _drive(spec, study, storage, opened, stop, say, tracker, writer)
    except KeyboardInterrupt:
        _close(writer, say)  # the last epochs first: then what still runs is interrupted
        marked = st.repair_interrupted(study)
        end_tracking(tracker, spec, study, failed=True)
        heartbeat.finish("interrupted")
        raise StudyInterrupted(stop.signum or signal.SIGINT, st.study_summary(study),
                               marked) from None
    except BaseException:
        _close(writer, say)
        end_tracking(tracker, spec, study, failed=True)
        heartbeat.finish("failed")
        raise
    writer.close()
    end_tracking(tracker, spec, study)
    heartbeat.finish("done")
    return outcome


def _close(writer: st.EpochWriter, say: Callable[[str], None]) -> None:
    """Write the queued epochs on the way out of a failed or stopped study, saying (not
    raising) when the database refuses them: the first error is the one to report."""
    try:
        writer.close()
    except st.RecordingFailed as err:
        say(f"warning: {err}")


def _check_before_ray(spec: StudySpec, url: str, resume: st.Resume | bool) -> None:
    """What can be refused before Ray starts (which takes seconds): ConfigError saying what."""
    plugins.add_code_paths([spec.code] if spec.code else [])
    try:
        check_config(spec.base_config())  # an unknown dataset would fail every trial
    except ConfigError as err:
        raise ConfigError(f"spec {spec.name!r}, base.{err}") from None
    check_tracking(spec)  # a missing extra, named before anything is written
    st.check_submission_at(url, spec, resume=resume)
    study_dir = Path(spec.study_dir)
    problem = folder_problem(study_dir)
    if problem:
        raise ConfigError(f"study_dir {str(study_dir)!r} cannot hold the study's files "
                          f"({problem}); set study_dir in the spec (or $DM_SEARCH_STUDY_DIR) to "
                          "a writable folder")


def _drive(spec: StudySpec, study: optuna.Study, storage: Any, opened: st.Opened,
           stop: StopRequest, say: Callable[[str], None], tracker: Tracking,
           writer: st.EpochWriter) -> StudyOutcome:
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
        _search(spec, study, storage, max(remaining, 0), progress, say, stop, tracker,
                writer)
        writer.flush()  # what follows ranks the trials by their epochs
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
        final = run_final_stage(spec, study, say)
        if final is not None:
            tracker.final_stage(final)
    refreshes_done()
    attach(lambda: dashboard.update_dashboard(study))
    return StudyOutcome(spec.name, opened.created, opened.repaired, max(remaining, 0),
                        st.study_summary(study), progress.wall_s, search_s)


def _search(spec: StudySpec, study: optuna.Study, storage: Any, remaining: int,
            progress: Progress, say: Callable[[str], None], stop: StopRequest,
            tracker: Tracking, writer: st.EpochWriter) -> None:
    artifact_path = st.artifact_dir(st.resolve_url(None, spec), spec.study_dir)
    assert artifact_path is not None
    artifact_path.mkdir(parents=True, exist_ok=True)
    artifacts = FileSystemArtifactStore(str(artifact_path))
    ray_path = Path(spec.study_dir).resolve() / "ray"
    st.record_locations(study, artifact_path, ray_path)
    define = RecordingSpace(make_space(spec), artifacts)

    # The sampler is seeded past the trials already in the study, so that a resumed study
    # does not repeat its first suggestions.
    sampler = make_sampler(spec, seed_offset=len(study.trials))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        searcher = OptunaSearch(space=define, metric=METRIC, mode="max", sampler=sampler,
                                study_name=spec.name, storage=storage)
    study_searcher = StudySearcher(searcher, spec, study, stop, writer)
    search_alg = ConcurrencyLimiter(study_searcher, max_concurrent=spec.max_concurrent)
    _tune_environment(spec)
    _count_recorded(study, progress)
    recorder = Recorder(study, progress, spec.max_concurrent, say, artifacts, stop,
                        tracker=tracker, searched=list(spec.space.params), writer=writer)
    resources = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    given = worker.handed_over()
    trainable = tune.with_parameters(worker.trainable, provided=given[0]) if given else \
        worker.trainable
    tuner = tune.Tuner(
        tune.with_resources(trainable, resources),
        tune_config=tune.TuneConfig(search_alg=search_alg,
                                    scheduler=RuleScheduler(spec, st.past_curves(study)),
                                    num_samples=remaining + len(study_searcher.pending),
                                    reuse_actors=True),
        run_config=tune.RunConfig(
            name=f"{spec.name}-{stamp}",
            storage_path=str(ray_path),
            verbose=0,
            callbacks=[recorder, QuietProgress()],
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


def _tune_environment(spec: StudySpec) -> None:
    """Tune's settings that a study needs, set before the Tuner is built."""
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
    # Ctrl-C and SIGTERM are the study's to handle (see stopping_on_signals): Tune's own
    # handler would print how to restore a Tune run, which is not how a study resumes.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"


def _count_recorded(study: optuna.Study, progress: Progress) -> None:
    """A resumed study's progress line starts from what the database already holds."""
    for t in study.get_trials(deepcopy=False):
        reason = st.stop_reason(t)
        if reason == st.FINISHED:
            progress.finished += 1
        elif reason == st.EARLY or reason.startswith("duplicate"):
            progress.early += 1
        elif reason.startswith("failed") and reason != st.INTERRUPTED:
            progress.failed += 1
