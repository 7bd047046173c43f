"""Dagster's default run launcher, plus the health check that lets run monitoring see a dead run worker.

`DefaultRunLauncher` starts one run worker process per run but cannot tell run monitoring whether
that process still lives, so a run whose worker was SIGKILLed or OOM-killed stays STARTED forever and
keeps its `accelerator` pool slots. The worker reports its pid in the run's first engine event; this launcher
answers run monitoring's health check from it (configured in dagster.yaml as the instance's launcher).
"""

from pathlib import Path

from dagster._core.events import DagsterEventType
from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, WorkerStatus


def worker_pid(instance, run_id: str) -> int | None:
    """The pid of the run's (latest) worker process, from its 'Started process for run' engine event."""
    for record in reversed(instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT)):
        event = record.dagster_event
        data = event.engine_event_data if event else None
        pid = data.metadata.get("pid") if data and data.metadata else None
        if pid is not None and "Started process for run" in (event.message or ""):
            return int(pid.value)
    return None


def proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state, parent pid, ...); None when unreadable.
    The name is cut at the last ')' because it may itself hold spaces and parentheses."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields if len(fields) >= 2 else None


def process_alive(pid: int) -> bool:
    """A process that exists and is not a zombie (a dead child not yet reaped still answers kill -0)."""
    if Path(f"/proc/{pid}").exists():
        fields = proc_stat(pid)
        return fields is not None and fields[0] not in ("Z", "X")
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalRunLauncher(DefaultRunLauncher):
    """A run worker process per run on this machine, whose death run monitoring detects."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run) -> CheckRunHealthResult:
        pid = worker_pid(self._instance, run.run_id)
        if pid is None:  # not started yet: run monitoring's start timeout covers a worker that never starts
            return CheckRunHealthResult(WorkerStatus.RUNNING, "run worker not started yet")
        if process_alive(pid):
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker pid {pid} alive")
        return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker pid {pid} died (killed, or out of memory)",
                                    run_worker_id=str(pid))
