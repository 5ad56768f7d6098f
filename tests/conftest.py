import pytest


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """One data directory for the whole run, so generated datasets are cached once."""
    return tmp_path_factory.mktemp("data")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def free_port():
    return _free_port


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL server on loopback for the whole run; its URL carries a password
    so that tests can check it never leaks (the server trusts loopback, so any password works).
    """
    import glob
    import os
    import shutil
    import subprocess
    import tempfile

    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    bindir = bins[-1] if bins else os.path.dirname(shutil.which("pg_ctl") or "")
    if not bindir or not os.path.exists(os.path.join(bindir, "initdb")):
        raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) are needed for the "
                           "PostgreSQL tests: apt-get install postgresql")
    root = tempfile.mkdtemp(prefix="dm-search-pg-")
    os.chmod(root, 0o777)
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    port = _free_port()
    data = os.path.join(root, "data")

    def run(*cmd):
        subprocess.run([*as_postgres, *cmd], check=True, capture_output=True, cwd=root)

    run(f"{bindir}/initdb", "-D", data, "-U", "dm", "--auth=trust")
    run(f"{bindir}/pg_ctl", "-D", data, "-w", "-l", os.path.join(root, "log"), "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start")
    try:
        run(f"{bindir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "dm", "dmsearch")
        yield f"postgresql+psycopg://dm:pg-secret-pw@127.0.0.1:{port}/dmsearch"
    finally:
        run(f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)
