"""The epoch writer: the driver hands each epoch report over and goes on; a thread of its own
writes them to the database in batches.

Tune calls the driver's callbacks from one loop, and every millisecond spent there is a
millisecond no trial's report is handled. A commit per report capped a study at about a
hundred reports a second; here the loop only appends to a bounded queue, and the writer
takes whatever has queued while it wrote the previous batch, letting a batch gather for at
most LINGER_S, so that a study writes at most about ten transactions a second. A full
queue makes ``put`` wait: a database that cannot keep up slows the study instead of filling
memory.

``flush`` returns once everything handed over before it is written: the driver calls it
before anything that reads or finishes a trial (Optuna refuses updates to a finished trial,
and its samplers read a stopped trial's last value). ``close`` flushes and stops the thread:
on a normal end, after Ctrl-C or SIGTERM, and on an exception. What a ``kill -9`` loses is
what was queued or in flight: LINGER_S and a write's time, under a second while the database
keeps up.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from itertools import islice
from typing import Any

import sqlalchemy as sa

from dm_search.storage.epochs import EpochReport, write_reports
from dm_search.storage.url import StorageUnavailable

__all__ = ["EpochWriter", "RecordingFailed", "WriterStats"]

MAX_QUEUED = 20_000  # reports waiting: a few seconds of a very large study, some MB
MAX_BATCH = 5_000  # reports per transaction
# How long a batch may gather once its first report is in: a transaction costs the driver
# about the same CPU for one report as for thousands, and trials report in bursts.
LINGER_S = 0.1
RETRY_MAX_S = 10.0


class RecordingFailed(StorageUnavailable):
    """The database refused epoch reports until the writer was closed."""


@dataclass
class WriterStats:
    """What the writer did: for benchmarks and for the driver's last word on a study."""

    reports: int = 0
    batches: int = 0
    largest_batch: int = 0
    write_s: float = 0.0  # time inside write transactions
    waits: int = 0  # puts that found the queue full
    most_queued: int = 0
    failures: int = 0
    max_lag_s: float = 0.0  # from the worker's report to its commit (needs synced clocks)
    # (commit time, lag) of the latest reports, time.time() both
    lags: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=100_000))


class EpochWriter:
    """Writes :class:`EpochReport` s to the study database from a thread of its own."""

    def __init__(self, where: Any, *, max_queued: int = MAX_QUEUED,
                 max_batch: int = MAX_BATCH, say: Callable[[str], None] | None = None) -> None:
        self._where = where
        self.max_queued = max_queued
        self.max_batch = max_batch
        self._say = say or (lambda _: None)
        self._cond = threading.Condition()
        self._queue: deque[EpochReport] = deque()
        self._queued = 0  # reports ever handed over
        self._written = 0  # reports ever written
        self._closing = False
        self._flushing = 0  # callers waiting in flush(): no lingering then
        self._error: BaseException | None = None
        self.stats = WriterStats()
        self._thread = threading.Thread(target=self._run, name="dm-search-epochs", daemon=True)
        self._thread.start()

    def put(self, report: EpochReport) -> None:
        """Queue a report; waits while the queue is full."""
        with self._cond:
            if self._closing:
                raise RecordingFailed("the epoch writer is closed")
            if len(self._queue) >= self.max_queued:
                self.stats.waits += 1
                self._cond.wait_for(lambda: len(self._queue) < self.max_queued
                                    or not self._thread.is_alive())
            self._queue.append(report)
            self._queued += 1
            self.stats.most_queued = max(self.stats.most_queued, len(self._queue))
            self._cond.notify_all()

    @property
    def pending(self) -> int:
        with self._cond:
            return self._queued - self._written

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every report handed over so far is written; False on timeout."""
        with self._cond:
            target = self._queued
            self._flushing += 1
            self._cond.notify_all()
            try:
                return self._cond.wait_for(lambda: self._written >= target
                                           or not self._thread.is_alive(), timeout) \
                    and self._written >= target
            finally:
                self._flushing -= 1

    def close(self, timeout: float = 60.0) -> None:
        """Write what is queued and stop. RecordingFailed when the database kept refusing it
        for ``timeout`` seconds (the reports are then lost, and the error says how many)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        written = self.flush(timeout)
        self._thread.join(timeout=1.0 if written else 0.0)
        if not written:
            raise RecordingFailed(
                f"{self.pending} epoch report(s) could not be written to the study database: "
                f"{self._error}")

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        failures = 0
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._queue) or self._closing)
                if not self._queue:
                    return  # closing, and nothing left
                gathered = time.monotonic() + (LINGER_S if not failures else 0.0)
                while (len(self._queue) < self.max_batch and not self._closing
                       and not self._flushing and (left := gathered - time.monotonic()) > 0):
                    self._cond.wait(left)
                batch = list(islice(self._queue, self.max_batch))
            started = time.perf_counter()
            try:
                self._write(batch)
            except Exception as err:  # a database hiccup: keep the batch, try again
                self._error = err
                self.stats.failures += 1
                failures += 1
                if failures == 1:
                    self._say(f"warning: writing epoch reports to the study database failed "
                              f"({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                              "retrying, nothing is dropped")
                time.sleep(min(RETRY_MAX_S, 0.25 * 2 ** min(failures, 6)))
                continue
            if failures:
                self._say("the study database accepts epoch reports again")
            failures = 0
            done = time.time()
            with self._cond:
                for _ in batch:
                    self._queue.popleft()
                self._written += len(batch)
                s = self.stats
                s.reports += len(batch)
                s.batches += 1
                s.largest_batch = max(s.largest_batch, len(batch))
                s.write_s += time.perf_counter() - started
                for r in batch:
                    if r.reported_at is not None:
                        lag = done - r.reported_at
                        s.lags.append((done, lag))
                        s.max_lag_s = max(s.max_lag_s, lag)
                self._cond.notify_all()

    def _write(self, batch: list[EpochReport]) -> None:
        try:
            write_reports(self._where, batch)
        except sa.exc.IntegrityError:
            # An epoch already on record (a report delivered twice): the new one replaces it.
            write_reports(self._where, [replace(r, restart=True) for r in batch], exact=True)
