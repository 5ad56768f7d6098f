"""Shared pieces of the end-to-end search tests: tiny specs and running the CLI as a user."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

CLI = str(Path(sys.executable).parent / "dm-search")


def write_spec(folder: Path, data_root: Path, *, name: str = "tiny", epochs: int = 3,
               n_trials: int = 4, model: str = "mlp", num_samples: int = 400, **extra) -> Path:
    spec = {
        "name": name,
        "study_dir": str(folder),
        "base": {
            "data": {"name": "mnist1d", "num_samples": num_samples, "root": str(data_root),
                     "noise": {"kind": "symmetric", "rate": 0.4}},
            "model": {"name": model, "options": {"width": 8}},
            "optim": {"epochs": epochs, "batch_size": 64},
            "diagnostics": False,
        },
        "space": {"families": {"dm": {}, "gce": {}}},
        "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
        "n_trials": n_trials,
        "max_concurrent": 2,
        "resources": {"cpu": 1},
        "warm_start": True,
    }
    spec.update(extra)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run_cli(*args: str, timeout: float = 600, env: dict | None = None,
            ) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    full_env.pop("RAY_ADDRESS", None)
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env=full_env)


def status_json(storage: str, study: str) -> dict:
    out = run_cli("status", study, "--storage", storage, "--json", timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)
