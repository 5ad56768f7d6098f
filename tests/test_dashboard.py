"""optuna-dashboard on a study made by the tests, looked at in headless Chromium."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest

from dm_search import dashboard as dash

pytestmark = pytest.mark.slow

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=20000"]


@pytest.fixture
def dashboard(tmp_path, free_port, make_study, search):
    url = f"sqlite:///{tmp_path}/studies.db"
    study = make_study(url)
    dash.update_dashboard(study)
    port = free_port()
    proc = subprocess.Popen([search.cli, "dashboard", "--storage", url, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/meta", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "the dashboard did not come up in 60 s"
                time.sleep(0.3)
        yield base, port
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise RuntimeError("Debian's chromium is needed for the dashboard test: run `make "
                           "browser` (apt-get install chromium chromium-driver)")
    return path


def test_dashboard_shows_the_study_and_its_edf_figure(dashboard, tmp_path):
    base, _ = dashboard
    with urllib.request.urlopen(f"{base}/api/studies", timeout=10) as resp:
        studies = json.load(resp)["study_summaries"]
    assert [s["study_name"] for s in studies] == ["made"]
    page = f"{base}/dashboard/studies/{studies[0]['study_id']}"
    chromium = _chromium()
    dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path}/a",
                          "--dump-dom", page], capture_output=True, text=True, timeout=120)
    html = dom.stdout
    assert "made" in html
    # the value is named, not "Objective 0"
    with urllib.request.urlopen(f"{base}/api/studies/{studies[0]['study_id']}?after=0",
                                timeout=10) as resp:
        detail = json.load(resp)
    assert detail["objective_names"] == ["val_acc"]
    note = detail["note"]["body"]
    assert note.startswith("# made\n") and "## Best EDF" in note
    # each trial row lists its user attributes in full: short scalars only (a config and a
    # per-epoch history there made a row about 600 px tall)
    rows = [(t["number"], a["key"], a["value"]) for t in detail["trials"]
            for a in t["user_attrs"]]
    assert rows and max(len(str(v)) for *_, v in rows) <= 40, max(rows, key=lambda r: len(r[2]))
    assert {"family", "val_acc", "test_acc", "memorised", "epochs_completed",
            "stop_reason"} <= {k for _, k, _ in rows}
    for gid in dash.DASHBOARD_FIGURES:
        assert f"user-defined-plot:{gid}" in html
    # plotly drew the figure (its title is SVG text on the page), not just an empty box
    assert "EDFs of the best trials against CE" in html
    assert "Accuracy over the (emphasis mode, spread) plane" in html
    shot = tmp_path / "dashboard.png"
    subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path}/b",
                    "--window-size=1400,2200", f"--screenshot={shot}", page],
                   capture_output=True, timeout=120)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000


def test_dashboard_binds_loopback_only(dashboard):
    _, port = dashboard
    others = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None,
                                                        socket.AF_INET)} - {"127.0.0.1"}
    others |= {a for a in _interface_addresses() if not a.startswith("127.")}
    assert others, "no non-loopback address to test against"
    for addr in others:
        with pytest.raises(OSError):
            socket.create_connection((addr, port), timeout=2).close()


def _interface_addresses() -> set[str]:
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5)
        return set(out.stdout.split())
    except (OSError, subprocess.SubprocessError):
        return set()
