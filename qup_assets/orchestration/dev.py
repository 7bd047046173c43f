"""`make dev`: `dagster dev` (webserver, daemon, a code server per location) run as one unit that Ctrl-C stops.

A terminal's Ctrl-C sends SIGINT to every process of its foreground group at once. Under a bare `dagster dev`
that includes the code servers, which exit at once, and dagster dev's code-server monitor restarts an exited
server every 5 s, so Ctrl-C could start a fresh code server while the rest shut down; with a run worker's
`multiprocessing` resource tracker (which ignores SIGINT and SIGTERM) the whole group was still running 90 s
after a Ctrl-C (measured, issue 33). Here `dagster dev` runs in a session of its own: Ctrl-C reaches this
supervisor only, which interrupts `dagster dev` alone (it stops its webserver and daemon, then its code
servers, in order) and, after a grace period or once it has exited, ends whatever of its process group is left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Sequence

from qup_assets.orchestration.launcher import proc_stat

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def end_group(pgid: int, grace: float = 2.0) -> None:
    """SIGTERM to every process left in the group, then SIGKILL to what survives `grace` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and group_alive(pgid):
            time.sleep(0.1)
        if not group_alive(pgid):
            return


def group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs (zombies, dead and waiting for their parent, do not count)."""
    if not os.path.isdir("/proc"):  # no procfs (macOS): any member, zombies included
        try:
            os.killpg(pgid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False
    for entry in os.scandir("/proc"):
        fields = proc_stat(int(entry.name)) if entry.name.isdigit() else None
        if fields and len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def serve(argv: Sequence[str], grace: float = 10.0, env: dict | None = None) -> int:
    """Run `argv` (dagster dev) in its own process group until it exits or this process is told to stop;
    then stop it: SIGINT to it alone, up to `grace` seconds for its own shutdown, then the rest of its group
    ended. Returns its exit code (130 when stopped by a signal, as a shell reports Ctrl-C)."""
    proc = subprocess.Popen(list(argv), start_new_session=True, env=env)
    stop_at: list[float] = []

    def stop(signum, frame):
        if not stop_at:
            stop_at.append(time.monotonic())
            try:
                proc.send_signal(signal.SIGINT)
            except ProcessLookupError:
                pass

    previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    rc = None
    try:
        while rc is None:
            try:
                rc = proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                if stop_at and time.monotonic() - stop_at[0] > grace:
                    break
    finally:
        end_group(proc.pid)
        if rc is None:
            rc = proc.wait()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 130 if stop_at else rc
