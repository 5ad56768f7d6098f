"""A throwaway PostgreSQL server on loopback, for the tests and the benchmarks: initdb in a
temporary folder, listening on 127.0.0.1 only, trusting local connections, removed after."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def postgres_server(database: str) -> Iterator[int]:
    """Start a server with ``database`` (user ``dm``, any password) and yield its port."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    bindir = bins[-1] if bins else os.path.dirname(shutil.which("pg_ctl") or "")
    if not bindir or not os.path.exists(os.path.join(bindir, "initdb")):
        raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) are needed for the "
                           "PostgreSQL tests: apt-get install postgresql")
    root = tempfile.mkdtemp(prefix="dm-search-pg-")
    os.chmod(root, 0o777)
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    port = free_port()
    data = os.path.join(root, "data")

    def run(*cmd: str) -> None:
        subprocess.run([*as_postgres, *cmd], check=True, capture_output=True, cwd=root)

    run(f"{bindir}/initdb", "-D", data, "-U", "dm", "--auth=trust")
    run(f"{bindir}/pg_ctl", "-D", data, "-w", "-l", os.path.join(root, "log"), "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start")
    try:
        run(f"{bindir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "dm", database)
        yield port
    finally:
        run(f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)
