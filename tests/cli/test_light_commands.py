"""The light commands (--help, --version, list, status) import neither torch nor ray: they
start fast and fit on a login node. Each runs in a fresh interpreter, as a user's shell would.
"""

from __future__ import annotations

import json
import subprocess
import sys

import optuna
import pytest

from dm_search import storage as st

PROBE = """
import json, sys
sys.argv = ["dm-search", *json.loads(sys.argv[1])]
from dm_search.cli import main
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code or 0
print("MODULES", json.dumps({"code": code, "torch": "torch" in sys.modules,
                             "ray": "ray" in sys.modules}))
"""


def _probe(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(list(args))],
                         capture_output=True, text=True, timeout=120)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("MODULES ")]
    assert line, out.stdout + out.stderr
    return json.loads(line[-1][len("MODULES "):])


@pytest.fixture
def db(tmp_path):
    url = f"sqlite:///{tmp_path}/studies.db"
    study = optuna.create_study(study_name="s", storage=st.open_storage(url))
    trial = study.ask()
    trial.set_user_attr(st.TrialKey.EDF, {"family": "dm", "lam": 1.0, "beta": 16.0})
    trial.set_user_attr(st.TrialKey.STOP, st.FINISHED)
    study.tell(trial, 0.8)
    return url


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["list", "--storage", "DB"],
                                  ["status", "s", "--storage", "DB"],
                                  ["status", "--storage", "DB"]])
def test_light_commands_import_neither_torch_nor_ray(args, db):
    got = _probe(*[db if a == "DB" else a for a in args])
    assert got == {"code": 0, "torch": False, "ray": False}


def test_the_probe_sees_a_heavy_command_import_torch():
    got = _probe("edf", "describe", "dm")
    assert got["code"] == 0 and got["torch"] and not got["ray"]
