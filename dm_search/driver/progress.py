"""The counts behind the study's live progress line, its ETA, and the stand-in for Tune's own
progress printer."""

from __future__ import annotations

import datetime as dt
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from ray.tune.progress_reporter import TrialProgressCallback

from dm_search.common.labels import loss_label

__all__ = ["Progress", "QuietProgress", "config_label", "hms"]


class QuietProgress(TrialProgressCallback):
    """Stands in for Tune's own progress printer, whose "Trial ... completed. Last result"
    dumps would interleave with the study's progress line."""

    def _print(self, msg: str) -> None:
        pass


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


def hms(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return str(dt.timedelta(seconds=round(seconds)))


def config_label(cfg: dict[str, Any]) -> str:
    return loss_label(cfg["loss"])
