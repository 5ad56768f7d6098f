"""Faults a study must survive, each run for real through the `dm-search` command.

Every scenario submits a small MNIST-1D study (1-D CNN, no early stopping, 2 trials at a
time, 1 CPU each), injects one fault, and measures what happened: the exit code, how long the
driver took to stop, whether every trial that had completed is still there with its value,
how the interrupted trials are recorded, and whether `submit --resume` then finishes the study.

    sigkill        SIGKILL to the driver's whole process group (the driver and its Ray)
    sigint         Ctrl-C: SIGINT to the process group, as a terminal sends it
    sigterm        SIGTERM to the driver alone (kill PID)
    sigterm-group  SIGTERM to the process group, as systemd and `timeout` send it
    diverging      one trial's learning rate is 1e30: it diverges while the study goes on
    lost-worker    a two-node Ray cluster on this machine loses its second node mid-study
    readers        `status --json` and `list` run over and over while the study writes

    python benchmarks/bench_faults.py [--only sigint,readers] [--runs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from dm_search import storage as st

CLI = str(Path(sys.executable).parent / "dm-search")
RAY = str(Path(sys.executable).parent / "ray")
ENV = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"COLUMNS": "200"}


def _spec(folder: Path, name: str, **extra: Any) -> Path:
    spec = {
        "name": name,
        "study_dir": str(folder),
        "base": {"data": {"name": "mnist1d", "num_samples": 1200,
                          "noise": {"kind": "symmetric", "rate": 0.4}},
                 "model": {"name": "cnn1d"}, "optim": {"epochs": 25, "batch_size": 64},
                 "diagnostics": False},
        "space": {"families": {"dm": {}, "gce": {}}},
        "scheduler": {"name": "none"},
        "n_trials": 6,
        "max_concurrent": 2,
        "resources": {"cpu": 1},
        "baselines": [],
        **extra,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _study(folder: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name,
                             storage=st.open_storage(f"sqlite:///{folder}/studies.db"))


def _start(spec: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    log = spec.with_suffix(".log").open("w")
    return subprocess.Popen([CLI, "submit", spec.name, *extra], cwd=spec.parent, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True, env=env or ENV)


def _wait_for_finished_and_running(folder: Path, name: str, proc: subprocess.Popen
                                   ) -> dict[int, float]:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.3)
        try:
            trials = _study(folder, name).trials
        except Exception:
            continue
        done = {t.number: t.value for t in trials if t.state == TrialState.COMPLETE}
        running = [t for t in trials if t.state == TrialState.RUNNING
                   and t.user_attrs.get(st.TrialKey.EPOCHS)]
        if done and running:
            return done
    raise RuntimeError(f"{name}: never had a finished and a running trial at once")


def _kept(folder: Path, name: str, before: dict[int, float]) -> bool:
    by_number = {t.number: t for t in _study(folder, name).trials}
    return all(by_number[n].state == TrialState.COMPLETE and by_number[n].value == v
               for n, v in before.items())


def _counts(folder: Path, name: str) -> dict[str, int]:
    return st.study_summary(_study(folder, name))["by_reason"]


def _resume(folder: Path, spec: Path, name: str) -> str:
    out = subprocess.run([CLI, "submit", spec.name, "--resume"], cwd=folder, env=ENV,
                         capture_output=True, text=True, timeout=600)
    by = _counts(folder, name)
    return f"rc {out.returncode}, {by.get('finished', 0)} finished"


def _signal_scenario(sig: int, group: bool) -> Callable[[Path], dict[str, Any]]:
    def run(folder: Path) -> dict[str, Any]:
        name = f"f{sig}{'g' if group else ''}"
        spec = _spec(folder, name)
        proc = _start(spec)
        before = _wait_for_finished_and_running(folder, name, proc)
        t0 = time.monotonic()
        (os.killpg if group else os.kill)(proc.pid, sig)
        rc = proc.wait(timeout=300)
        stop_s = time.monotonic() - t0
        if sig == signal.SIGKILL and not group:
            os.killpg(proc.pid, signal.SIGKILL)
        log = spec.with_suffix(".log").read_text()
        running = sum(t.state == TrialState.RUNNING for t in _study(folder, name).trials)
        by = _counts(folder, name)
        return {
            "exit": rc, "stop_s": stop_s, "kept": f"{len(before)}/{len(before)}"
            if _kept(folder, name, before) else "LOST",
            "interrupted": by.get("interrupted", 0) or (f"{running} left running"
                                                        if running else 0),
            "says_resume": "Resume it with: dm-search submit" in log,
            "traceback": "Traceback" in log,
            "resume": _resume(folder, spec, name),
        }
    return run


def diverging(folder: Path) -> dict[str, Any]:
    name = "diverge"
    spec = _spec(folder, name, n_trials=3, sampler={"name": "grid"},
                 space={"families": {"dm": {}},
                        "params": {"optim.lr": {"low": 1e-3, "high": 1e31, "log": True}},
                        "grid": [{"family": "dm", "lam": 1.0, "beta": 8.0, "optim.lr": 1e30},
                                 {"family": "dm", "optim.lr": 0.05},
                                 {"family": "dm", "lam": 1.0, "beta": 8.0, "optim.lr": 0.05}]})
    t0 = time.monotonic()
    proc = _start(spec)
    rc = proc.wait(timeout=600)
    log = spec.with_suffix(".log").read_text()
    by = _counts(folder, name)
    return {"exit": rc, "stop_s": time.monotonic() - t0,
            "kept": f"{by.get('finished', 0)} finished",
            "interrupted": f"{by.get('failed', 0)} failed (" + ", ".join(
                st.study_summary(_study(folder, name))["failures"]) + ")",
            "says_resume": "-", "traceback": "Traceback" in log, "resume": "not needed"}


def lost_worker(folder: Path) -> dict[str, Any]:
    """The second node's raylet is killed mid-study: its trial dies with it."""
    import socket

    def free() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    port, node_port = free(), free()
    # `ray start` clusters require token authentication; every node and client shares it.
    env = ENV | {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
                 "RAY_AUTH_TOKEN": secrets.token_hex(16),
                 "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}

    def ray(*args: str) -> None:
        out = subprocess.run([RAY, *args], env=env, capture_output=True, text=True,
                             timeout=180)
        if out.returncode:
            raise RuntimeError(f"ray {' '.join(args)}: {out.stderr[-2000:]}")

    name = "lost"
    try:
        ray("start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
            "--node-ip-address=127.0.0.1", "--disable-usage-stats")
        ray("start", f"--address=127.0.0.1:{port}", "--num-cpus=1",
            f"--node-manager-port={node_port}", "--node-ip-address=127.0.0.1",
            "--disable-usage-stats")
        spec = _spec(folder, name, max_failures=1)
        proc = _start(spec, "--address", f"127.0.0.1:{port}", env=env)
        before = _wait_for_finished_and_running(folder, name, proc)
        killed = subprocess.run(["pkill", "-9", "-f", f"node_manager_port={node_port}"])
        if killed.returncode:
            raise RuntimeError("the second node's raylet was not found")
        t0 = time.monotonic()
        rc = proc.wait(timeout=600)
        log = spec.with_suffix(".log").read_text()
        by = _counts(folder, name)
        retried = len(list((folder / "ray").rglob("error.txt")))  # Tune's record of a retry
        study = _study(folder, name)
        whole = all([h["epoch"] for h in st.trial_history(study, t)]
                    == list(range(1, len(st.trial_history(study, t)) + 1))
                    for t in study.trials)
        return {"exit": rc, "stop_s": time.monotonic() - t0,
                "kept": f"{len(before)}/{len(before)}" if _kept(folder, name, before)
                else "LOST",
                "interrupted": f"{retried} retried, {by.get('failed', 0)} failed, "
                               f"{by.get('finished', 0)} finished, histories "
                               + ("whole" if whole else "BROKEN"),
                "says_resume": "-", "traceback": "Traceback" in log,
                "resume": "not needed" if by.get("finished", 0) >= 6 else "needed"}
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=180)


def readers(folder: Path) -> dict[str, Any]:
    name = "readers"
    spec = _spec(folder, name)
    proc = _start(spec)
    url = f"sqlite:///{folder}/studies.db"
    latencies, errors = [], 0
    while proc.poll() is None:
        for args in (["status", name, "--json"], ["list"]):
            t0 = time.monotonic()
            out = subprocess.run([CLI, *args, "--storage", url], env=ENV, capture_output=True,
                                 text=True, timeout=120)
            latencies.append(time.monotonic() - t0)
            if "no study named" in out.stderr or "no study database" in out.stderr:
                continue  # asked before the study was created
            try:
                if out.returncode != 0:
                    raise ValueError(out.stderr)
                if args[0] == "status":
                    json.loads(out.stdout)
            except ValueError:
                errors += 1
    log = spec.with_suffix(".log").read_text()
    by = _counts(folder, name)
    return {"exit": proc.returncode, "stop_s": statistics.median(latencies),
            "kept": f"{by.get('finished', 0)} finished",
            "interrupted": f"{len(latencies)} reads, {errors} failed",
            "says_resume": "-", "traceback": "Traceback" in log, "resume": "not needed"}


SCENARIOS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "sigkill": _signal_scenario(signal.SIGKILL, group=True),
    "sigint": _signal_scenario(signal.SIGINT, group=True),
    "sigterm": _signal_scenario(signal.SIGTERM, group=False),
    "sigterm-group": _signal_scenario(signal.SIGTERM, group=True),
    "diverging": diverging,
    "lost-worker": lost_worker,
    "readers": readers,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(SCENARIOS))
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import ray
    import torch

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, torch {torch.__version__}, Ray {ray.__version__}, "
          f"Optuna {optuna.__version__}; {args.runs} run(s) each")
    print("| scenario | run | exit | seconds* | completed trials kept | interrupted / failed "
          "| resume command printed | traceback | resume |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key in args.only.split(","):
        for run in range(args.runs):
            folder = Path(tempfile.mkdtemp(prefix=f"faults-{key}-"))
            r = SCENARIOS[key](folder)
            print(f"| {key} | {run + 1} | {r['exit']} | {r['stop_s']:.1f} | {r['kept']} | "
                  f"{r['interrupted']} | {r['says_resume']} | {r['traceback']} | "
                  f"{r['resume']} |", flush=True)
    print("* signal scenarios: signal to driver exit; diverging: the whole study; lost-worker: "
          "node lost to driver exit; readers: median seconds per read command")


if __name__ == "__main__":
    main()
