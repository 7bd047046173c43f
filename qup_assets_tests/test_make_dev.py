"""`make dev` as a researcher uses it: the UI on localhost only, a run worker killed the way the out-of-memory
killer kills one and the next launches from the UI and from `qup run` working without a restart, and Ctrl-C
stopping everything it started. One `make dev` on a copy of the shared micro study serves all three."""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from qup_assets_tests.helpers import free_port, wait_until_serving

REPO = Path(__file__).resolve().parent.parent


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of the sockets in LISTEN state on `port`, read from /proc (IPv4 and IPv6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:
                found.add(addr)
    return found


def _processes() -> dict[int, tuple[int, int, str]]:
    """Every live (not zombie) process: pid -> (parent pid, process group, command line)."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
            if stat[0] not in ("Z", "X"):
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:160]
                out[int(d.name)] = (int(stat[1]), int(stat[2]), cmd)
        except (OSError, IndexError, ValueError):
            continue
    return out


def _started_by(root: int) -> dict[int, str]:
    """What `make dev` started and is still running: its descendants and every process of their groups (a run
    worker's resource tracker outlives the worker, reparented away from the tree but still in its group)."""
    procs = _processes()
    tree, grew = {root}, True
    while grew:
        kids = {pid for pid, (ppid, _, _) in procs.items() if ppid in tree} - tree
        tree |= kids
        grew = bool(kids)
    groups = {procs[p][1] for p in tree if p in procs}
    return {pid: cmd for pid, (_, pgid, cmd) in procs.items() if pid in tree or pgid in groups}


def _oom_score_adj(pid: int) -> int:
    return int(Path(f"/proc/{pid}/oom_score_adj").read_text())


def _wait_run(instance, run_id: str, seconds: float):
    import dagster as dg

    done = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run.status in done:
            return run.status
        time.sleep(0.5)
    return instance.get_run_by_id(run_id).status


@pytest.mark.slow
def test_make_dev_survives_a_killed_run_worker_and_stops_on_ctrl_c(micro_study, tmp_path, monkeypatch):
    import dagster as dg
    from dagster_graphql import DagsterGraphQLClient

    from qup_assets.cli import main
    from qup_assets.orchestration.launcher import proc_stat, worker_pid

    ms = micro_study.copy(tmp_path / "dev").env(monkeypatch)
    port = free_port()
    log = tmp_path / "dev.log"
    proc = subprocess.Popen(["make", "-s", "dev", f"PORT={port}", f"STUDY={ms.study}"], cwd=REPO, env=os.environ.copy(),
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}/server_info", proc, log, 180, "make dev")
        # The UI listens on 127.0.0.1 only: not 0.0.0.0, not ::, closed from the machine's own address.
        assert _listening_addresses(port) == {"0100007F"}, _listening_addresses(port)
        outside = socket.gethostbyname(socket.gethostname())
        if not outside.startswith("127."):
            with socket.socket() as sock, pytest.raises(OSError):
                sock.settimeout(3)
                sock.connect((outside, port))

        # A family run launched as the UI launches it (GraphQL), its worker SIGKILLed mid-run.
        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        instance = dg.DagsterInstance.get()

        def launch(ops=None):
            return client.submit_job_execution("family_assets", repository_location_name="micro",
                                               repository_name="__repository__", tags={"dagster/partition": "micro-qwen"},
                                               op_selection=ops)

        first = launch()
        deadline = time.monotonic() + 120
        while worker_pid(instance, first) is None and time.monotonic() < deadline:
            time.sleep(0.2)
        pid = worker_pid(instance, first)
        assert pid is not None, log.read_text()[-3000:]
        server = int(proc_stat(pid)[1])  # the code server that started it
        time.sleep(1)  # past its start
        # The OOM killer takes the process with the highest score: a run worker volunteers, its code server does not.
        assert _oom_score_adj(pid) > _oom_score_adj(server) == 0
        os.kill(pid, signal.SIGKILL)
        assert _wait_run(instance, first, 60) == dg.DagsterRunStatus.FAILURE

        # The next launch from the UI and from qup run both succeed, nothing restarted.
        again = launch(["native_evaluation"])  # a whole family again would only repeat the same launch path
        assert _wait_run(instance, again, 300) == dg.DagsterRunStatus.SUCCESS, log.read_text()[-3000:]
        assert main(["run", "--study", str(ms.study), "--family", "micro-qwen", "--select", "key:native_eval",
                     "--force"]) == 0
        assert proc.poll() is None
        started = _started_by(proc.pid)
        assert len(started) >= 5, started  # make, qup dev, dagster dev, the webserver, the daemon, code servers
    finally:
        # Ctrl-C, as a terminal sends it: SIGINT to the whole foreground process group.
        started = _started_by(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)
        t = time.monotonic()
        left = started
        while left and time.monotonic() - t < 15:
            time.sleep(0.2)
            now = _processes()
            left = {pid: cmd for pid, cmd in started.items() if pid in now}
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(30)
    assert not left, f"still running 15 s after Ctrl-C: {left}"


def test_ctrl_c_ends_a_supervised_server_and_helpers_that_ignore_signals(tmp_path):
    """qup dev's supervisor (orchestration/dev.py) on a stand-in server: its child ignores SIGINT and SIGTERM, as
    a multiprocessing resource tracker does, and the server itself exits on SIGINT. Ctrl-C to the terminal's
    group (the supervisor's) leaves nothing running."""
    import sys

    pids = tmp_path / "pids"
    server = (
        "import os, signal, subprocess, sys, time\n"
        "helper = subprocess.Popen([sys.executable, '-c', 'import signal, time\\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN); signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
        "time.sleep(600)'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{helper.pid}}')\n"
        "time.sleep(600)\n"
    )
    supervisor = subprocess.Popen(
        [sys.executable, "-c", "import sys; from qup_assets.orchestration.dev import serve; "
         f"sys.exit(serve([sys.executable, '-c', {server!r}], grace=3))"],
        cwd=REPO, start_new_session=True)
    deadline = time.monotonic() + 60
    while not (pids.exists() and len(pids.read_text().split()) == 2) and time.monotonic() < deadline:
        time.sleep(0.1)
    started = [int(p) for p in pids.read_text().split()]
    assert all(pid in _processes() for pid in started)
    os.killpg(supervisor.pid, signal.SIGINT)
    assert supervisor.wait(15) == 130
    assert not [pid for pid in started if pid in _processes()]


def test_only_a_launched_run_worker_volunteers_to_the_oom_killer():
    """A process that materializes in its own process (this test's) keeps its OOM score: what it starts later (a
    code server) would inherit it. A run worker (a code server's multiprocessing child) raises its own."""
    import multiprocessing

    from qup_assets.assets.resources import volunteer_to_oom_killer

    before = _oom_score_adj(os.getpid())
    assert volunteer_to_oom_killer() is False and _oom_score_adj(os.getpid()) == before
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        assert pool.apply(_volunteer_and_report) == (True, max(before, 800))


def _volunteer_and_report():
    from qup_assets.assets.resources import volunteer_to_oom_killer

    return volunteer_to_oom_killer(), _oom_score_adj(os.getpid())
