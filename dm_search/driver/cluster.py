"""Connecting to Ray (this machine or a cluster) and checking, before any trial is queued, that
some node can hold one."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from dm_search.common import plugins
from dm_search.study.spec import StudySpec
from dm_search.training.config import ConfigError

__all__ = ["ClusterUnavailable", "ResourcesUnavailable", "check_resources", "code_environment",
           "connect_ray", "leave_ray", "ray_running"]


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


def code_environment(code: str | None, study_dir: str) -> dict[str, Any] | None:
    """Ray's runtime environment that ships ``code`` (a folder) to every worker as its
    working directory; None without one. The study's own files, version control and caches
    stay behind (Ray also leaves out what the folder's .gitignore lists)."""
    if code is None:
        return None
    root = Path(code).resolve()
    excludes = [".git", "**/__pycache__", "*.db", "*.db-journal", ".venv", "venv"]
    study = Path(study_dir).resolve()
    if study.is_relative_to(root) and study != root:
        excludes.append("/" + study.relative_to(root).as_posix())
    # The copy's files are named by the folder they came from in a failed trial's reason.
    return {"working_dir": str(root), "excludes": excludes,
            "env_vars": {plugins.ENV_CODE: str(root)}}


def connect_ray(address: str | None, num_cpus: int | None = None,
                runtime_env: dict[str, Any] | None = None) -> None:
    """ray.init locally (this machine's CPUs) or at ``address``; clear error if unreachable.
    ``runtime_env`` ships code to every worker (see :func:`code_environment`)."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": True,
                              "logging_level": "ERROR"}
    if runtime_env:
        kwargs["runtime_env"] = runtime_env
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


def check_resources(spec: StudySpec, address: str | None, say: Callable[[str], None],
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


def ray_running() -> bool:
    """Whether this process is connected to Ray already."""
    return bool(ray.is_initialized())


def leave_ray(timeout_s: float = 5.0) -> None:
    """Shut Ray down, but never wait on it for more than ``timeout_s``: after a SIGTERM to the
    whole process group its processes are gone, and its own shutdown would wait a minute for
    them."""
    done = threading.Thread(target=ray.shutdown, daemon=True)
    done.start()
    done.join(timeout_s)


class ClusterUnavailable(ConfigError):
    """The Ray cluster cannot be reached."""
