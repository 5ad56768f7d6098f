"""Ctrl-C, SIGTERM and the driver's heartbeat: how a running study is asked to stop, and how
`status` tells a running study from one whose driver is gone."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import optuna
from ray import tune

from dm_search import storage as st

__all__ = ["Heartbeat", "StopRequest", "StudyInterrupted", "stopping_on_signals"]


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


class StopRequest(tune.Stopper):
    """The first Ctrl-C asks Tune to stop every trial at its next step (SIGTERM stops at once,
    see stopping_on_signals); what was running is then recorded as interrupted, to be run
    again on resume."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.in_tune = False  # outside Tune's loop nothing would see the request: stop at once

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.signum is not None


@contextmanager
def stopping_on_signals(stop: StopRequest, say: Callable[[str], None]) -> Iterator[None]:
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


class Heartbeat(threading.Thread):
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
