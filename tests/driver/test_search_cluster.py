"""The search against a real PostgreSQL server and on a two-node Ray cluster on this machine."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest

from dm_search import storage as st
from tests.driver import test_own_code_study as own_code_study

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).parent / "ray")


def _files_holding(root: Path, secret: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*")
            if p.is_file() and not p.is_symlink() and secret in p.read_bytes()]


def test_study_end_to_end_with_postgresql(search, tmp_path, data_root, postgres_url):
    spec = search.write_spec(tmp_path, data_root, name="pg")
    # Ray's session directory in a folder of its own (short: Ray puts sockets under it), so
    # that every file the study wrote can be searched for the password.
    ray_tmp = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))
    try:
        out = search.run_cli("submit", str(spec), "--storage", postgres_url,
                             env={"RAY_TMPDIR": str(ray_tmp)})
        assert out.returncode == 0, out.stdout + out.stderr
        assert list(ray_tmp.glob("ray/session_*"))
        assert list((tmp_path / "ray").rglob("*.pkl"))  # Tune's state was written
        for root in (tmp_path, ray_tmp):
            assert _files_holding(root, b"pg-secret-pw") == []
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert "pg-secret-pw" not in out.stdout + out.stderr
    assert "dm:***@127.0.0.1" in out.stdout
    study = search.check_study(postgres_url, "pg", 4, 3)
    assert "pg-secret-pw" not in str(study.user_attrs)
    assert "pg-secret-pw" not in str(study._storage.get_study_system_attrs(study._study_id))
    # From the environment too, so the URL need not be on the command line.
    summary = search.run_cli("status", "pg", "--json", env={st.ENV_STORAGE: postgres_url})
    assert summary.returncode == 0 and '"name": "pg"' in summary.stdout
    assert not (tmp_path / "studies.db").exists()


@pytest.fixture
def two_node_cluster(free_port, monkeypatch):
    """`ray start --head` plus a second node joining it, one CPU each, with the job server and
    token authentication (every node and client shares the token through the environment)."""
    port, dash = free_port(), free_port()
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    for key, value in auth.items():
        monkeypatch.setenv(key, value)  # for the job client in this process
    env = {**os.environ, **auth, "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)

    def ray(*args):
        return subprocess.run([RAY, *args], env=env, capture_output=True, text=True, timeout=180)

    try:
        head = ray("start", "--head", f"--port={port}", "--num-cpus=1",
                   "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                   f"--dashboard-port={dash}", "--node-ip-address=127.0.0.1")
        assert head.returncode == 0, head.stderr
        worker = ray("start", f"--address=127.0.0.1:{port}", "--num-cpus=1",
                     "--node-ip-address=127.0.0.1")
        assert worker.returncode == 0, worker.stderr
        yield f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}", env
    finally:
        ray("stop", "--force")


def test_trials_run_on_both_nodes_and_detach_submits_a_job(search, tmp_path, data_root,
                                                          two_node_cluster):
    gcs, jobs, env = two_node_cluster
    spec = search.write_spec(tmp_path, data_root, name="cluster", n_trials=6, epochs=4,
                      model="cnn1d", num_samples=800, scheduler={"name": "none"})
    out = search.run_cli("submit", str(spec), "--address", gcs)
    assert out.returncode == 0, out.stdout + out.stderr
    url = f"sqlite:///{tmp_path}/studies.db"
    study = search.check_study(url, "cluster", 6, 4)
    nodes = {st.trial_node(t)["id"] for t in study.trials}
    assert len(nodes) == 2, nodes

    # --detach: the study runs as a Ray Job on the cluster; the storage URL travels in its env.
    detached = search.write_spec(tmp_path, data_root, name="detached", n_trials=2, epochs=2)
    out = search.run_cli("submit", str(detached), "--detach", "--address", jobs, "--storage", url)
    assert out.returncode == 0, out.stdout + out.stderr
    job_id = out.stdout.split("as Ray job ")[1].split()[0]
    # Asked through the `ray job` command (a fresh process that reads the token from the
    # environment): Ray caches its authentication settings in a process that imported it.
    _wait_for_job(jobs, job_id, env)
    summary = search.status_json(url, "detached")
    assert summary["trials"] == 3 and len(summary["references"]) == 1  # and CE, once
    assert optuna.load_study(study_name="detached", storage=url).trials

    # A training loop of one's own, whose module exists only in the submitting project's
    # folder: `code: .` ships it to both nodes (attached), and with the job (--detach).
    proj = own_code_study._project(
        tmp_path, data_root, name="own-cluster", space={"families": {"dm": {}}},
        n_trials=4, race={"enabled": False}, final={"enabled": True, "seeds": 2},
        scheduler={"name": "none"})
    out = search.run_cli("submit", str(proj / "study.yaml"), "--address", gcs,
                         "--storage", url)
    assert out.returncode == 0, out.stdout + out.stderr
    study = optuna.load_study(study_name="own-cluster", storage=url)
    assert [st.stop_reason(t) for t in study.trials] == [st.FINISHED] * 5
    assert len({st.trial_node(t)["id"] for t in study.trials}) == 2
    assert len(st.final_stage(study)["best"]["runs"]) == 2
    out = search.run_cli("submit", str(proj / "study.yaml"), "--detach", "--address", jobs,
                         "--storage", url, "--name", "own-detached")
    assert out.returncode == 0, out.stdout + out.stderr
    job_id = out.stdout.split("as Ray job ")[1].split()[0]
    _wait_for_job(jobs, job_id, env)
    study = optuna.load_study(study_name="own-detached", storage=url)
    assert [st.stop_reason(t) for t in study.trials] == [st.FINISHED] * 5


def _wait_for_job(jobs: str, job_id: str, env: dict) -> None:
    """Until the Ray job ends; an AssertionError with its logs unless it succeeded."""
    deadline = time.monotonic() + 240
    while True:
        status = subprocess.run([RAY, "job", "status", "--address", jobs, job_id], env=env,
                                capture_output=True, text=True, timeout=60)
        said = (status.stdout + status.stderr).lower()
        if any(f"' {s}" in said for s in ("succeeded", "failed", "stopped")):
            break
        assert time.monotonic() < deadline, status.stdout + status.stderr
        time.sleep(1)
    if "' succeeded" not in said:
        logs = subprocess.run([RAY, "job", "logs", "--address", jobs, job_id], env=env,
                              capture_output=True, text=True, timeout=60)
        raise AssertionError(status.stdout + logs.stdout[-3000:])
