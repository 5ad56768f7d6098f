"""The server `dm-search dashboard` runs optuna-dashboard on: a slow request (a large study's
importances) does not hold up the others, and Ctrl-C ends it cleanly."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import urllib.request

import pytest

from dm_search.cli.result_commands import _serve


def _app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        time.sleep(3.0)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [environ["PATH_INFO"].encode()]


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


def test_a_slow_request_does_not_hold_up_the_next(free_port):
    port = free_port()
    threading.Thread(target=_serve, args=(_app, "127.0.0.1", port), daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while True:
        try:
            assert _get(f"{base}/up") == b"/up"
            break
        except OSError:
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.05)
    slow = threading.Thread(target=_get, args=(f"{base}/slow",))
    slow.start()
    time.sleep(0.2)  # the slow one is being served
    t0 = time.monotonic()
    assert _get(f"{base}/fast") == b"/fast"
    assert time.monotonic() - t0 < 1.0, "the fast request waited for the slow one"
    assert slow.is_alive()
    slow.join()


@pytest.mark.slow  # a CLI process that imports optuna-dashboard: several seconds
def test_ctrl_c_ends_the_dashboard_with_success(tmp_path, free_port, make_study, search):
    url = f"sqlite:///{tmp_path}/studies.db"
    make_study(url)
    port = free_port()
    proc = subprocess.Popen([search.cli, "dashboard", "--storage", url, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _get(f"http://127.0.0.1:{port}/api/meta")
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "the dashboard did not come up in 60 s"
                time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    assert f"on http://127.0.0.1:{port}/" in out
