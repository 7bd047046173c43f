"""The Dagster daemon that dequeues, launches and monitors runs (and refreshes the report).

`make dev` runs one with the UI. Without it, `qup run` starts one per DAGSTER_HOME that every `qup run`
on that instance shares (two studies at once, two terminals): a small supervisor process keeps
`dagster-daemon run` going over a workspace of every study run on the instance, restarts it when a new
study joins (running runs keep going: their workers do not belong to the daemon), and stops it once no
`qup run` is left and no run is queued or running. One daemon per instance: a `make dev` (or any
`dagster-daemon run`) on this machine with the same DAGSTER_HOME is used instead of starting one.
"""

import fcntl
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from qup_assets.orchestration.launcher import proc_stat, process_alive
from qup_assets.study import REPO_ROOT, STUDIES_DIR, Study

IDLE_SECONDS = 20  # the shared daemon stops this long after its last client and run


def location_target(study: Study) -> dict:
    """How a code location loads this study: by name for a study file in data/studies (as in
    workspace.yaml), else by its path (qup_assets.definitions decodes the attribute)."""
    bundled = STUDIES_DIR / f"{study.name}.yaml"
    path = Path(study.source_path).resolve()
    attr = study.name if bundled.is_file() and bundled.resolve() == path else "path_" + str(path).encode().hex()
    return {"module_name": "qup_assets.definitions", "attribute": attr, "location_name": study.name,
            "working_directory": str(REPO_ROOT)}


def workspace_file(study: Study, home: Path) -> Path:
    """A one-location workspace for the study (JSON is YAML), the same location name as workspace.yaml."""
    path = home / "workspaces" / f"{study.name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"load_from": [{"python_module": location_target(study)}]}, indent=1))
    return path


def _register(study: Study, home: Path) -> Path:
    """Add the study to the shared daemon's workspace (rewritten only when it changes)."""
    ws = home / "workspaces" / "qup-daemon.yaml"
    ws.parent.mkdir(parents=True, exist_ok=True)
    entries = json.loads(ws.read_text())["load_from"] if ws.exists() else []
    target = location_target(study)
    others = [e for e in entries if e["python_module"]["location_name"] != study.name]
    new = others + [{"python_module": target}]
    if new != entries:
        tmp = ws.with_suffix(".tmp")
        tmp.write_text(json.dumps({"load_from": new}, indent=1))
        tmp.replace(ws)
    return ws


def _environ_home(pid: int) -> str | None:
    """The DAGSTER_HOME a local process runs with (None: gone, or not ours to read)."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for entry in env:
        if entry.startswith(b"DAGSTER_HOME="):
            return str(Path(entry[len(b"DAGSTER_HOME="):].decode()).resolve())
    return None


def _our_supervisor(home: Path) -> int | None:
    """The pid of the shared daemon's supervisor for this home, if it runs (a copied home's pid file
    names a process that serves the original home, not this one)."""

    try:
        pid = int((home / "qup-daemon.pid").read_text())
    except (OSError, ValueError):
        return None
    return pid if process_alive(pid) and _environ_home(pid) == str(home.resolve()) else None


def foreign_daemon(home: Path) -> int | None:
    """The pid of another daemon on this machine serving this DAGSTER_HOME (`make dev`'s), if any."""
    mine = _our_supervisor(home)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = proc.joinpath("cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [Path(a.decode(errors="replace")).name for a in argv[:4]]
        daemon = ("dagster-daemon" in words or "dagster._daemon" in words) and "run" in words
        if not daemon and not ("dagster" in words and "dev" in words):
            continue
        pid = int(proc.name)
        fields = proc_stat(pid)
        if mine and fields and fields[1] == str(mine):
            continue  # the daemon our supervisor runs
        if _environ_home(pid) == str(home.resolve()):
            return pid
    return None


@contextmanager
def running_daemon(study: Study, instance, home: Path, log=print):
    """Yield while a daemon serves this instance and this study; this process counts as a client."""
    home = Path(home)
    clients = open(home / "qup-daemon.clients", "a")
    fcntl.flock(clients, fcntl.LOCK_SH)  # released when this process ends, however it ends
    try:
        with open(home / "qup-daemon.start", "a") as start:
            fcntl.flock(start, fcntl.LOCK_EX)
            ws = _register(study, home)
            pid, ui = _our_supervisor(home), foreign_daemon(home)
            if pid:
                log(f"== using the shared Dagster daemon (pid {pid}, log {home / 'qup-daemon.log'})")
            elif ui:
                log(f"== using the running Dagster daemon (pid {ui}, make dev)")
            else:
                with open(home / "qup-daemon.log", "ab") as logf:
                    proc = subprocess.Popen([sys.executable, "-m", "qup_assets.orchestration.daemon", str(home), str(ws)],
                                            stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
                                            env=dict(os.environ, DAGSTER_HOME=str(home.resolve())))
                (home / "qup-daemon.pid").write_text(str(proc.pid))
                log(f"== started the Dagster daemon (pid {proc.pid}, log {home / 'qup-daemon.log'}); it stops "
                    f"{IDLE_SECONDS} s after the last run")
        yield
    finally:
        clients.close()


def _idle(home: Path, instance) -> bool:
    import dagster as dg

    with open(home / "qup-daemon.clients", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a qup run is still following its runs
        fcntl.flock(f, fcntl.LOCK_UN)
    live = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
            dg.DagsterRunStatus.CANCELING]
    return instance.get_runs_count(dg.RunsFilter(statuses=live)) == 0


def _die_with_parent() -> None:
    """In the daemon's process before exec: SIGTERM when the supervisor dies, even by SIGKILL."""
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def supervise(home: Path, ws: Path) -> None:
    """Keep `dagster-daemon run -w ws` going; restart it when ws changes; stop when idle."""
    import dagster as dg

    instance = dg.DagsterInstance.get()
    exe = str(Path(sys.executable).with_name("dagster-daemon"))
    child, seen, idle_since = None, None, None
    try:
        while True:
            mtime = ws.stat().st_mtime
            if child is None or child.poll() is not None or mtime != seen:
                if child is not None and child.poll() is None:
                    print(f"workspace changed: restarting the daemon ({ws})", flush=True)
                    _stop(child)
                child = subprocess.Popen([exe, "run", "-w", str(ws), "--log-level", "warning"],
                                         preexec_fn=_die_with_parent if sys.platform == "linux" else None)
                seen = mtime
            if _idle(home, instance):
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > IDLE_SECONDS:
                    return
            else:
                idle_since = None
            time.sleep(1)
    finally:
        if child is not None:
            _stop(child)
        (home / "qup-daemon.pid").unlink(missing_ok=True)


def _stop(child: subprocess.Popen) -> None:
    child.terminate()
    try:
        child.wait(timeout=60)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


if __name__ == "__main__":
    supervise(Path(sys.argv[1]), Path(sys.argv[2]))
