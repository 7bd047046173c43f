"""The Dagster daemon that dequeues, launches and monitors runs (and refreshes the report).

`make dev` runs one with the UI. Without it, `qup run` starts one per DAGSTER_HOME that every `qup run`
on that instance shares (two studies at once, two terminals): a small supervisor process keeps
`dagster-daemon run` going over a workspace of every study run on the instance, restarts it when a new
study joins (running runs keep going: their workers do not belong to the daemon), and stops it once no
`qup run` is left and no run is queued or running. One daemon per instance, never two.
"""

import fcntl
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from qup_assets.study import REPO_ROOT, STUDIES_DIR, Study

LIVE_SECONDS = 75  # a daemon writes a heartbeat every 30 s
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


def _pid_alive(path: Path) -> int | None:
    from qup_assets.orchestration.launcher import process_alive

    try:
        pid = int(path.read_text())
    except (OSError, ValueError):
        return None
    return pid if process_alive(pid) else None


def foreign_daemon_live(instance, home: Path) -> bool:
    """Another daemon (the UI's) sends heartbeats: not ours, and not the last beats of one we stopped."""
    beat = instance.get_daemon_heartbeats().get("QUEUED_RUN_COORDINATOR")
    if beat is None or time.time() - beat.timestamp > LIVE_SECONDS:
        return False
    stopped = home / "qup-daemon.stopped"
    return not (stopped.exists() and beat.timestamp <= stopped.stat().st_mtime + 1)


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
            pid = _pid_alive(home / "qup-daemon.pid")
            if pid:
                log(f"== using the shared Dagster daemon (pid {pid}, log {home / 'qup-daemon.log'})")
            elif foreign_daemon_live(instance, home):
                log("== using the running Dagster daemon (make dev)")
            else:
                with open(home / "qup-daemon.log", "ab") as logf:
                    proc = subprocess.Popen([sys.executable, "-m", "qup_assets.orchestration.daemon", str(home), str(ws)],
                                            stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
                                            env=dict(os.environ, DAGSTER_HOME=str(home)))
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
                child, seen = subprocess.Popen([exe, "run", "-w", str(ws), "--log-level", "warning"]), mtime
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
        (home / "qup-daemon.stopped").touch()
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
