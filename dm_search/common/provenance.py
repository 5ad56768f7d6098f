"""What a study ran with, for its report: the library versions, dm-search's git commit when it
runs from a checkout, and a machine's hardware. Nothing here imports torch at import time, so
the light commands stay fast."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from dm_search._version import __version__

__all__ = ["ENV_COMMIT", "git_commit", "hardware", "versions"]

# A docker image has no .git: its build passes the commit in this variable.
ENV_COMMIT = "DM_SEARCH_GIT_COMMIT"
LIBRARIES = ("torch", "ray", "optuna", "optuna-dashboard", "plotly")


def versions() -> dict[str, str]:
    """dm-search's, Python's and the main libraries' versions, without importing them."""
    out = {"dm-search": __version__, "python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _git(*args: str, cwd: Path) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@functools.cache
def git_commit() -> str | None:
    """The commit dm-search runs from, with "-dirty" when tracked files were changed; None
    for an installed copy that is not a checkout (unless ``DM_SEARCH_GIT_COMMIT`` says)."""
    if os.environ.get(ENV_COMMIT):
        return os.environ[ENV_COMMIT]
    here = Path(__file__).resolve().parent
    top = _git("rev-parse", "--show-toplevel", cwd=here)
    # Only dm-search's own repository: a wheel installed inside some other checkout is not.
    if top is None or (Path(top) / "dm_search").resolve() != here:
        return None
    head = _git("rev-parse", "--short=12", "HEAD", cwd=here)
    if head is None:
        return None
    dirty = _git("status", "--porcelain", "--untracked-files=no", cwd=here)
    return head + ("-dirty" if dirty else "")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def hardware(gpu: bool = False) -> dict[str, Any]:
    """This machine: host name, CPU model and cores, memory, and with ``gpu`` the name of the
    first CUDA device (None without one)."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory = None
    out: dict[str, Any] = {"host": platform.node(), "cpu": _cpu_model(),
                           "cores": os.cpu_count(),
                           "memory_gb": None if memory is None else round(memory, 1)}
    if gpu:
        import torch

        out["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return out
