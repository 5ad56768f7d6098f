"""Starting without the repository: `dm-search init` writes a starter that runs as it is, the
shipped specs are reachable by name, and a wheel installed in a fresh environment works."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dm_search.cli import app
from dm_search.study.reading import load_spec, shipped_specs

ROOT = Path(__file__).resolve().parents[2]


def test_init_writes_a_starter_that_validates_and_never_overwrites(tmp_path, cli_runner):
    out = cli_runner.invoke(app, ["init", str(tmp_path / "new"), "--name", "mine"])
    assert out.exit_code == 0, out.output
    spec = load_spec(tmp_path / "new" / "study.yaml")
    assert spec.name == "mine" and set(spec.space.families) == {"dm", "gce"}
    assert spec.base_config().data.name == "mnist1d"  # base.yaml, found beside the spec
    text = (tmp_path / "new" / "study.yaml").read_text()
    assert text.count("#") > 5  # commented
    (tmp_path / "new" / "base.yaml").write_text("edited")
    again = cli_runner.invoke(app, ["init", str(tmp_path / "new")])
    assert again.exit_code == 2 and "already exist" in again.output and "--force" in again.output
    assert (tmp_path / "new" / "base.yaml").read_text() == "edited"  # nothing was written
    forced = cli_runner.invoke(app, ["init", str(tmp_path / "new"), "--force"])
    assert forced.exit_code == 0 and "edited" not in (tmp_path / "new" / "base.yaml").read_text()


def test_the_shipped_specs_are_reachable_by_name():
    assert {"quickstart", "paper_grid", "template"} <= set(shipped_specs())
    assert load_spec("quickstart").name == "quickstart"
    assert load_spec("quickstart").base_config().model.name == "cnn1d"


def test_a_name_that_is_neither_a_file_nor_shipped_says_which_are(tmp_path, cli_runner):
    out = cli_runner.invoke(app, ["submit", "quickstrat", "--storage",
                                  f"sqlite:///{tmp_path}/s.db"])
    assert out.exit_code == 2
    assert "no shipped spec of that name" in out.output and "quickstart" in out.output
    assert not (tmp_path / "s.db").exists()


@pytest.mark.slow
def test_a_built_wheel_installed_in_a_fresh_environment_inits_and_runs_a_study(tmp_path):
    wheels = tmp_path / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps",
                            "--no-build-isolation", "-w", str(wheels), "-q"],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    wheel = next(wheels.glob("dm_search-*.whl"))
    venv = tmp_path / "fresh-env"  # Ray starts its workers by a shell line: no spaces
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.check_output(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        text=True).strip())
    # The wheel itself goes into the fresh environment; its heavy dependencies (torch, ray)
    # are borrowed from this one rather than downloaded again.
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(site), str(wheel)], check=True, timeout=600)
    deps = next(p for p in sys.path if p.endswith("site-packages"))
    (site / "_borrowed_deps.pth").write_text(deps + "\n")
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(py), "-m", "dm_search.cli", *args], cwd=work, env=env,
                              capture_output=True, text=True, timeout=timeout)

    where = subprocess.run([str(py), "-c", "import dm_search; print(dm_search.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True)
    assert str(site) in where.stdout, where.stdout + where.stderr  # the wheel, not the checkout
    assert run("init", "starter").returncode == 0
    assert load_spec_there(py, work, env, "starter/study.yaml") == "my-study"
    assert load_spec_there(py, work, env, "quickstart") == "quickstart"  # shipped, by name
    # The starter's trial, shortened, trains from the installed package.
    out = run("train", "starter/base.yaml", "--set", "optim.epochs=2", "--set",
              "data.num_samples=400", "--quiet", "--json", "result.json", timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (work / "result.json").exists()
    # ... and a tiny study of it runs on Ray from the installed package.
    spec = yaml.safe_load((work / "starter" / "study.yaml").read_text())
    spec.update(n_trials=2, base_set=["optim.epochs=2", "data.num_samples=400"],
                final={"enabled": False}, race={"enabled": False}, study_dir=str(work / "runs"))
    (work / "starter" / "study.yaml").write_text(yaml.safe_dump(spec))
    out = run("submit", "starter/study.yaml", "--storage", f"sqlite:///{work}/s.db",
              timeout=400)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "done 3/3" in out.stdout  # two searched trials and the CE reference


def load_spec_there(py: Path, work: Path, env: dict, spec: str) -> str:
    """The name of ``spec`` as the installed package reads it."""
    out = subprocess.run([str(py), "-c", "import sys; from dm_search.study.reading import "
                          "load_spec; print(load_spec(sys.argv[1]).name)", spec], cwd=work,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()
