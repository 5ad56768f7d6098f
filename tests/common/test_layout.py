"""What each part of the package pulls in when it is imported: import-linter sees the imports
a module writes, not what a parent package's __init__ loads, so these run in a fresh
interpreter and look at sys.modules."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "ray", "optuna", "plotly", "scipy.optimize")

PROBE = """
import importlib, json, sys
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
print("MODULES", json.dumps({m: m in sys.modules for m in json.loads(sys.argv[2])}))
"""


def _loaded(*modules: str) -> dict[str, bool]:
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(list(modules)),
                          json.dumps(HEAVY)], capture_output=True, text=True, timeout=120)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("MODULES ")]
    assert line, out.stdout + out.stderr
    return json.loads(line[-1][len("MODULES "):])


@pytest.mark.parametrize(("modules", "heavy"), [
    # A Ray worker process loads what training needs, never the sampler, the plotting or the
    # moments solver.
    (["dm_search.driver.worker"], {"torch", "ray"}),
    # A user's script that takes the exported loss home needs torch alone.
    (["dm_search.training.exported"], {"torch"}),
    # The package itself and its shared helpers load nothing heavy until a name is used.
    (["dm_search", "dm_search.common.labels", "dm_search.common.records"], set()),
    # Reading a study's database (list, status) needs optuna, not torch.
    (["dm_search.storage"], {"optuna"}),
])
def test_each_part_loads_only_what_it_needs(modules, heavy):
    got = _loaded(*modules)
    assert {m for m, on in got.items() if on} == heavy


def test_the_public_names_load_on_first_use():
    probe = ("import sys, json; from dm_search import load_loss, load_recipe, EDF, DMLoss, "
             "EDFSchedule; print(json.dumps([m for m in ('ray', 'optuna', 'plotly') "
             "if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
