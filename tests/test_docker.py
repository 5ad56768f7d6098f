"""docker/ against the project: versions match the pins, every command is a real command with
valid flags, ports and environment variables are consistent. (hadolint and docker-compose
config run in `make docker-check`.)"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import click
import pytest
import typer
import yaml

from dm_search import __version__
from dm_search.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
ENV = dict(line.split("=", 1) for line in (DOCKER / ".env.example").read_text().splitlines()
           if line and not line.startswith("#"))


def _pin(name: str) -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for d in deps:
        m = re.match(rf"^{re.escape(name)}(\[[^\]]*\])?==([\w.]+)", d)
        if m:
            return m.group(2)
    raise AssertionError(f"{name} is not pinned")


def _substitute(text: str) -> str:
    """Compose's ${VAR} and ${VAR:-default} with the example env file."""
    def one(m: re.Match) -> str:
        var, _, default = m.group(1).partition(":-")
        return ENV.get(var, default)

    return re.sub(r"\$\{([^}]+)\}", one, text)


def _compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def _kuberay(name: str) -> dict:
    return yaml.safe_load((DOCKER / "kuberay" / name).read_text())


def check_command(argv: list[str]) -> None:
    """Parse argv with the real command-line parsers; a bad flag raises a usage error."""
    if argv[0] == "dm-search" and argv[1].startswith("-"):
        root = typer.main.get_command(app)
        options = {o for p in root.params for o in p.opts} | {"--help"}
        assert set(argv[1:]) <= options, argv
    elif argv[0] == "dm-search":
        group = typer.main.get_command(app)
        ctx = group.make_context("dm-search", argv[1:2], resilient_parsing=False)
        sub = group.get_command(ctx, argv[1])  # type: ignore[attr-defined]
        assert sub is not None, f"dm-search has no subcommand {argv[1]!r}"
        sub.make_context(argv[1], argv[2:], parent=ctx)
    elif argv[:2] == ["ray", "start"]:
        from ray.scripts.scripts import start

        start.make_context("start", argv[2:])
    else:
        raise AssertionError(f"unexpected command {argv}")


def test_versions_match_the_pins():
    ray = _pin("ray")
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert f"ARG RAY_VERSION={ray}" in dockerfile
    assert "FROM rayproject/ray:${RAY_VERSION}-py311-gpu" in dockerfile
    assert f"ARG DM_SEARCH_VERSION={__version__}" in dockerfile
    assert ENV["DM_SEARCH_VERSION"] == __version__
    for name, svc in _compose()["services"].items():
        if name != "postgres":
            assert _substitute(svc["image"]) == f"dm-search:{__version__}"
    cluster = _kuberay("raycluster.yaml")
    assert cluster["spec"]["rayVersion"] == ray
    pods = [cluster["spec"]["headGroupSpec"]] + cluster["spec"]["workerGroupSpecs"]
    for group in pods:
        for c in group["template"]["spec"]["containers"]:
            assert c["image"] == f"dm-search:{__version__}"


def test_every_command_is_real_with_valid_flags():
    commands = [shlex.split(_substitute(svc["command"]))
                for svc in _compose()["services"].values() if "command" in svc]
    commands.append(shlex.split(_kuberay("rayjob.yaml")["spec"]["entrypoint"]))
    dockerfile_cmd = re.findall(r'^CMD \[(.*)\]$', (DOCKER / "Dockerfile").read_text(), re.M)
    commands += [[a.strip().strip('"') for a in c.split(",")] for c in dockerfile_cmd]
    assert len(commands) >= 5
    for argv in commands:
        check_command(argv)
    # The check itself can fail (typer vendors its own click, hence the message match).
    with pytest.raises(Exception, match="No such option: --hots"):
        check_command(["dm-search", "dashboard", "--hots", "0.0.0.0"])
    with pytest.raises(click.UsageError, match=r"No such option.*--headd"):
        check_command(["ray", "start", "--headd"])


def test_ports_are_consistent_and_loopback_by_default():
    services = _compose()["services"]
    head = shlex.split(_substitute(services["ray-head"]["command"]))
    worker = shlex.split(_substitute(services["ray-worker"]["command"]))
    gcs = next(a.split("=")[1] for a in head if a.startswith("--port="))
    dash = next(a.split("=")[1] for a in head if a.startswith("--dashboard-port="))
    client = next(a.split("=")[1] for a in head if a.startswith("--ray-client-server-port="))
    assert f"--address=ray-head:{gcs}" in worker
    published = {p.rsplit(":", 1)[1] for p in services["ray-head"]["ports"]}
    assert published == {gcs, dash, client}
    dashboard = shlex.split(_substitute(services["dashboard"]["command"]))
    port = dashboard[dashboard.index("--port") + 1]
    assert [p.rsplit(":", 1)[1] for p in services["dashboard"]["ports"]] == [port]
    for svc in services.values():
        for p in svc.get("ports", []):
            assert p.startswith("${BIND_ADDRESS:-127.0.0.1}:"), p
    assert ENV["BIND_ADDRESS"] == "127.0.0.1"
    head_ports = {p["containerPort"] for p in _kuberay("raycluster.yaml")["spec"]["headGroupSpec"]
                  ["template"]["spec"]["containers"][0]["ports"]}
    assert head_ports == {int(gcs), int(dash), int(client)}


def test_environment_is_consistent_and_holds_no_secret():
    text = (DOCKER / "compose.yaml").read_text()
    for var in set(re.findall(r"\$\{([A-Z_]+)(?::-[^}]*)?\}", text)):
        assert var in ENV, f"{var} is used in compose.yaml but not in .env.example"
    services = _compose()["services"]
    for name in ("ray-head", "ray-worker", "dashboard"):
        env = services[name]["environment"]
        assert env["DM_SEARCH_STORAGE"].startswith("postgresql+psycopg://${POSTGRES_USER}:"
                                                   "${POSTGRES_PASSWORD}@postgres:5432/")
        assert env["DM_SEARCH_STUDY_DIR"] == "/studies"
    assert ENV["POSTGRES_PASSWORD"] not in text
    dashboard = shlex.split(services["dashboard"]["command"])
    assert dashboard[dashboard.index("--artifact-dir") + 1].startswith("/studies/")
    secret = _kuberay("secret.example.yaml")
    assert secret["stringData"]["url"].startswith("postgresql+psycopg://")
    for group in [_kuberay("raycluster.yaml")["spec"]["headGroupSpec"],
                  *_kuberay("raycluster.yaml")["spec"]["workerGroupSpecs"]]:
        env = {e["name"]: e for e in group["template"]["spec"]["containers"][0]["env"]}
        ref = env["DM_SEARCH_STORAGE"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": secret["metadata"]["name"], "key": "url"}
    assert "ENV DM_SEARCH_STORAGE" not in (DOCKER / "Dockerfile").read_text()


def test_rayjob_runs_a_spec_the_configmap_holds():
    from dm_search.study.reading import load_spec

    entry = shlex.split(_kuberay("rayjob.yaml")["spec"]["entrypoint"])
    spec_path = Path(entry[2])
    data = _kuberay("specs-configmap.yaml")["data"]
    assert spec_path.parent == Path("/specs") and spec_path.name in data
    shipped = ROOT / "search_spaces" / spec_path.name
    assert data[spec_path.name].strip() == shipped.read_text().strip()
    load_spec(shipped)
    cluster = _kuberay("raycluster.yaml")
    assert _kuberay("rayjob.yaml")["spec"]["clusterSelector"]["ray.io/cluster"] == (
        cluster["metadata"]["name"])
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in head["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in head["volumes"]}
    assert mounts["specs"] == "/specs"
    assert volumes["specs"]["configMap"]["name"] == (
        _kuberay("specs-configmap.yaml")["metadata"]["name"])
