"""Figures for the dashboard drawn off the driver's path: each trial's EDF curve and learning
curves, its note and the study's figures, drawn by threads of their own while trials run."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import suppress
from typing import Any

from dm_search import storage as st
from dm_search.edf import EDF
from dm_search.results import curves, dashboard

__all__ = ["RENDER_WAIT_S", "RecordingSpace", "attach", "refresh_later", "refreshes_done",
           "render_done", "render_later"]


class RecordingSpace:
    """Wraps the search space: records each trial's resolved config on the Optuna trial,
    has its EDF curve drawn for the dashboard (off the sampler's path: see render_later), and
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
        render_later(trial.number, lambda: dashboard.upload_figure(
            raw,
            curves.plot_edf_curves(curves.edf_curves_info([*edfs, EDF("cce")]),
                                   title=f"trial {trial.number}: {what} against CE"),
            "edf_curve.svg", self.artifacts))
        return out


def attach(upload: Callable[[], None]) -> None:
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


def render_later(number: int, upload: Callable[[], None]) -> None:
    global _RENDER_POOL
    if _RENDER_POOL is None:
        _RENDER_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dm-search-figure")
    _RENDERS.setdefault(number, []).append(_RENDER_POOL.submit(attach, upload))


# The trial notes and the study's figures (0.5 s for a study figure refresh) are drawn by a
# thread of their own, so that neither the next trial's start nor a trial's figures wait for
# them; the study waits for them before it returns (refreshes_done).
_REFRESH_POOL: ThreadPoolExecutor | None = None
_REFRESHES: list[Future[None]] = []


def refresh_later(work: Callable[[], None]) -> None:
    global _REFRESH_POOL
    if _REFRESH_POOL is None:
        _REFRESH_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dm-search-note")
    _REFRESHES[:] = [f for f in _REFRESHES if not f.done()]
    _REFRESHES.append(_REFRESH_POOL.submit(attach, work))


def refreshes_done() -> None:
    while _REFRESHES:
        with suppress(FutureTimeout):
            _REFRESHES.pop(0).result(timeout=RENDER_WAIT_S)


def render_done(number: int | None) -> None:
    """Wait (at most RENDER_WAIT_S each) for trial ``number``'s figures to be attached."""
    for fut in _RENDERS.pop(number, []) if number is not None else []:
        try:
            fut.result(timeout=RENDER_WAIT_S)
        except FutureTimeout:
            warnings.warn(f"trial {number}'s figure for the dashboard took over "
                          f"{RENDER_WAIT_S:g} s to draw; the trial is recorded without it",
                          stacklevel=2)
