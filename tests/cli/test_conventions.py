"""The command line follows the conventions of the tools around it: help that reads as a
person writes it, output to a pipe that is never cut, JSON from every reading command,
NO_COLOR, and shell completion."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from dm_search.cli import app
from tests.conftest import CLI

COMMANDS = [[], ["train"], ["submit"], ["status"], ["list"], ["report"], ["export"],
            ["dashboard"], ["edf"], ["edf", "list"], ["edf", "describe"], ["edf", "plot"]]
# A long EDF: its repr is what a narrow table cut short.
LONG = [({"family": "dm", "dm.mode": 0.547297312, "dm.spread": 18.81234567},
         [.5, .6, .7, .75, .78, .80], "full"),
        ({"family": "cce"}, [.55, .60, .62, .61, .58, .55], "full")]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a) or "dm-search")
def test_help_shows_no_type_placeholders(args, cli_runner):
    out = cli_runner.invoke(app, [*args, "--help"], env={"COLUMNS": "120"})
    assert out.exit_code == 0, out.output
    assert not re.findall(r"<[a-z][a-z \[\]]*>", out.output), out.output
    if args == ["list"]:
        assert re.search(r"--storage\s+URL", out.output) and re.search(r"--json\s+Print",
                                                                        out.output)


def test_shell_completion_installs_with_typers_own_option(cli_runner):
    out = cli_runner.invoke(app, ["--help"])
    assert "--install-completion" in out.output and "--show-completion" in out.output


@pytest.fixture
def long_study(tmp_path, make_study):
    url = f"sqlite:///{tmp_path}/long.db"
    make_study(url, LONG, name="a-study-with-a-rather-long-name-to-show-in-a-table")
    return url


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items()
               if k not in ("COLUMNS", "NO_COLOR", "FORCE_COLOR")}
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=120,
                          env={**environ, **env})


def test_output_to_a_pipe_is_never_cut(long_study):
    out = _run("list", "--storage", long_study)  # a pipe, and no COLUMNS: 80 columns before
    assert out.returncode == 0, out.stderr
    assert "a-study-with-a-rather-long-name-to-show-in-a-table" in out.stdout
    assert re.search(r"EDF\('dm', lam=1\.2\d{4,}, beta=18\.81234567\)", out.stdout), out.stdout
    assert "…" not in out.stdout
    assert re.search(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d", out.stdout), out.stdout


@pytest.mark.parametrize("args", [["list"], ["status"], ["status", "STUDY"]])
def test_every_reading_command_speaks_json(args, long_study):
    name = "a-study-with-a-rather-long-name-to-show-in-a-table"
    out = _run(*[name if a == "STUDY" else a for a in args], "--storage", long_study, "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    first = doc[0] if isinstance(doc, list) else doc
    assert name in (first.get("study"), first.get("name"))


def test_the_edf_commands_speak_json(cli_runner):
    families = json.loads(cli_runner.invoke(app, ["edf", "list", "--json"]).output)
    assert {"dm", "gce", "cce"} <= {f["family"] for f in families}
    dm = next(f for f in families if f["family"] == "dm")
    assert [p["name"] for p in dm["parameters"]] == ["lam", "beta"]
    got = json.loads(cli_runner.invoke(app, ["edf", "describe", "dm", "-p", "lam=0.5", "-p",
                                             "beta=8", "--points", "3", "--json"]).output)
    assert got["edf"] == {"family": "dm", "lam": 0.5, "beta": 8.0}
    assert got["mode"] == pytest.approx(1 / 3) and [w["p"] for w in got["weights"]] == [
        0.0, 0.5, 1.0]


def test_no_color_is_honoured(long_study):
    colour = re.compile(r"\x1b\[[0-9;]*(3[0-7]|38;[0-9;]+|9[0-7])m")
    name = "a-study-with-a-rather-long-name-to-show-in-a-table"
    forced = _run("status", name, "--storage", long_study, FORCE_COLOR="1")
    assert forced.returncode == 0 and colour.search(forced.stdout)  # the probe sees colour
    plain = _run("status", name, "--storage", long_study, FORCE_COLOR="1", NO_COLOR="1")
    assert plain.returncode == 0 and not colour.search(plain.stdout), plain.stdout
