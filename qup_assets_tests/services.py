"""Real servers on 127.0.0.1 for the distributed tests: Debian's redis-server and PostgreSQL, started on free
ports in a temporary folder and stopped at the end. CI installs both with apt (.ci/run)."""

import glob
import os
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from qup_assets_tests.helpers import free_port


def _missing(what: str):
    if os.environ.get("QUP_REQUIRE_DISTRIBUTED"):
        pytest.fail(f"{what} is not installed and QUP_REQUIRE_DISTRIBUTED is set (apt-get install -y redis-server "
                    "postgresql)")
    pytest.skip(f"{what} is not installed (apt-get install -y redis-server postgresql)")


def require_distributed_extra():
    """dagster-celery (the `distributed` extra) importable, or fail when QUP_REQUIRE_DISTRIBUTED says it must be."""
    try:
        import dagster_celery  # noqa: F401
    except ImportError:
        _missing("dagster-celery (pip install -e '.[distributed]')")


def _wait_port(port: int, proc: subprocess.Popen, log: Path, what: str, timeout: float = 60):
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode}: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout}s: {log.read_text()[-2000:]}")


@contextmanager
def redis_server():
    """A redis-server on 127.0.0.1:<free port>, no persistence; yields its redis:// URL (database 0)."""
    exe = shutil.which("redis-server")
    if not exe:
        _missing("redis-server")
    folder = Path(tempfile.mkdtemp(prefix="qup-redis-"))
    port, log = free_port(), folder / "redis.log"
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(folder)], stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        _wait_port(port, proc, log, "redis-server")
        yield f"redis://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def postgres_server():
    """A PostgreSQL cluster of its own (initdb) on 127.0.0.1:<free port> with a `dagster` database; yields its
    SQLAlchemy URL (psycopg2, the driver dagster-postgres speaks). As root, the server runs as the `postgres` user that Debian's package creates (postgres refuses root)."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        _missing("PostgreSQL (initdb)")
    bindir = Path(bins[-1]).parent
    folder = Path(tempfile.mkdtemp(prefix="qup-pg-"))
    data, log = folder / "data", folder / "postgres.log"
    as_user: list[str] = []
    if os.geteuid() == 0:
        import pwd

        pw = pwd.getpwnam("postgres")
        folder.chmod(0o755)
        data.mkdir(mode=0o700)
        for p in (data, folder):
            os.chown(p, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                    "-E", "UTF8"], check=True, capture_output=True)
    proc = subprocess.Popen([*as_user, str(bindir / "postgres"), "-D", str(data), "-p", str(port),
                             "-h", "127.0.0.1", "-k", str(folder), "-c", "fsync=off"],
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        _wait_port(port, proc, log, "postgres")
        url = f"postgresql://postgres@127.0.0.1:{port}"  # psql's form; dagster-postgres's below
        deadline = time.monotonic() + 30
        while True:  # listening comes a moment before accepting connections
            r = subprocess.run([str(bindir / "psql"), f"{url}/postgres", "-c", "create database dagster"],
                               capture_output=True, text=True)
            if r.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert r.returncode == 0, r.stderr
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/dagster"
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(folder, ignore_errors=True)
