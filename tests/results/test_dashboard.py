"""optuna-dashboard on a study made by the tests, looked at in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from dm_search.results import dashboard as dash
from tests import browser

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
    return browser.chromium()


def _study(base: str) -> tuple[int, dict]:
    with urllib.request.urlopen(f"{base}/api/studies", timeout=10) as resp:
        studies = json.load(resp)["study_summaries"]
    assert [s["study_name"] for s in studies] == ["made"]
    sid = studies[0]["study_id"]
    with urllib.request.urlopen(f"{base}/api/studies/{sid}?after=0", timeout=10) as resp:
        return sid, json.load(resp)


def _figures_ready(ids) -> str:
    return " && ".join(f"document.getElementById('user-defined-plot:{gid}')"
                       f"?.querySelector('svg.main-svg')" for gid in ids)


def test_dashboard_shows_the_study_and_its_edf_figure(dashboard, tmp_path):
    base, _ = dashboard
    sid, detail = _study(base)
    page = f"{base}/dashboard/studies/{sid}"
    chromium = _chromium()
    dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path}/a",
                          "--dump-dom", page], capture_output=True, text=True, timeout=120)
    html = dom.stdout
    assert "made" in html
    # the value is named, not "Objective 0"
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
    assert "EDFs, the best of each family against CE" in html
    assert "Accuracy over the (emphasis mode, spread) plane" in html


def test_dashboard_is_legible_figures_fit_the_metric_is_named_rows_are_short(dashboard,
                                                                             tmp_path):
    """What a reader sees, measured in the browser: every figure within its card, the metric
    named, the note written, trial rows of a normal height."""
    base, _ = dashboard
    sid, _ = _study(base)
    shots = tmp_path / "shots"
    shots.mkdir()
    with browser.Browser(tmp_path / "profile", width=1400, height=2400) as b:
        b.open(f"{base}/dashboard/studies/{sid}", _figures_ready(dash.DASHBOARD_FIGURES))
        b.screenshot(shots / "study.png")
        figures = b.evaluate(browser.FIGURE_FIT)
        ours = [f for f in figures if f["title"]]
        assert len(ours) >= len(dash.DASHBOARD_FIGURES), figures
        wide = [f for f in figures if f["over"] > 1]
        assert not wide, f"figures, titles or legends cut off by their card: {wide}"
        text = b.evaluate("document.body.innerText")
        assert "val_acc" in text and "Objective 0" not in text
        # the study's note, rendered on its page
        b.open(f"{base}/dashboard/studies/{sid}/note",
               "document.body.innerText.includes('Reading the figures')")
        b.screenshot(shots / "note.png")
        text = b.evaluate("document.body.innerText")
        assert "Best EDF" in text and "dm-search export made -o best_edf.yaml" in text
        # a trial's page: its user attributes one line each (a config and a 60-epoch history
        # there once made the block about 600 px tall); trial 6 failed, with a long reason
        b.open(f"{base}/dashboard/studies/{sid}/trials",
               "document.body.innerText.includes('User Attributes')")
        for number in (0, 6):
            b.evaluate(f"Array.from(document.querySelectorAll('*')).find(e => "
                       f"e.childElementCount === 0 && e.textContent.trim() === "
                       f"'Trial {number}').click()")
            b.open_wait(f"document.body.innerText.includes('Trial {number} (trial_id=')")
            b.screenshot(shots / f"trial_{number}.png")
            attrs = b.evaluate(USER_ATTRIBUTES)
            assert len(attrs["lines"]) >= 10, attrs
            assert max(attrs["lines"]) <= 1.5 * min(attrs["lines"]), attrs  # one line each
            assert attrs["block"] <= 40 * len(attrs["lines"]), attrs
    for shot in shots.iterdir():
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
        if os.environ.get(SHOTS):  # to look at them
            shutil.copy(shot, Path(os.environ[SHOTS]) / f"dashboard_{shot.name}")


# The height of the User Attributes block on a trial's page, and of each of its lines.
USER_ATTRIBUTES = """
(() => { const label = Array.from(document.querySelectorAll('p'))
           .find(e => e.textContent.trim() === 'User Attributes');
         const block = label.parentElement;
         return {block: block.getBoundingClientRect().height,
                 lines: Array.from(block.querySelectorAll('p')).slice(1)
                   .map(p => p.getBoundingClientRect().height)}; })()
"""

# A folder to keep the browser tests' screenshots in, to look at them.
SHOTS = "DM_SEARCH_TEST_SHOTS"


def test_the_report_fits_a_laptop_screen(make_study, tmp_path):
    """The report in the browser: no figure wider than the page's column, at a laptop's
    width and at a narrow window's."""
    from dm_search.results.report import write_report

    study = make_study(f"sqlite:///{tmp_path}/r.db")
    path = write_report(study, tmp_path / "report.html")
    for width in (1280, 700):
        with browser.Browser(tmp_path / f"profile{width}", width=width, height=1600) as b:
            b.open(path.as_uri(), "document.querySelectorAll('.js-plotly-plot svg.main-svg')"
                   ".length >= 9")
            shot = b.screenshot(tmp_path / f"report{width}.png")
            if os.environ.get(SHOTS):
                shutil.copy(shot, Path(os.environ[SHOTS]) / shot.name)
            figures = b.evaluate(browser.FIGURE_FIT)
            assert len(figures) >= 9
            wide = [f for f in figures if f["over"] > 1]
            assert not wide, f"at {width} px, figures wider than the page: {wide}"


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
