"""Launch runs through the instance's run queue and launcher, as the UI does, and follow them.

`qup run` creates each run from an in-process view of the study's code location (same location name as
the workspace's), submits it to the instance's run coordinator (the queue: dagster.yaml says how many go
at once), and streams its event log until it ends. The daemon dequeues and launches it with the run
launcher (a run worker process per run locally, a pod or a Celery worker elsewhere).
"""

import sys
import time
from contextlib import contextmanager
from typing import NamedTuple

import dagster as dg
from dagster._core.definitions.selector import JobSubsetSelector
from dagster._core.events import DagsterEventType
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from qup_assets.orchestration.daemon import location_target
from qup_assets.study import Study

REPOSITORY = "__repository__"
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


class Launch(NamedTuple):
    label: str  # what the terminal shows in front of the run's lines: "shared", a family, "report"
    job: str
    keys: list
    partition: str | None = None


@contextmanager
def code_location(study: Study, instance):
    """The study's code location loaded in this process, named as the daemon's workspace names it."""
    t = location_target(study)
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(executable_path=sys.executable, module_name=t["module_name"], attribute=t["attribute"],
                             working_directory=t["working_directory"]),
        location_name=t["location_name"])
    with origin.create_location(instance) as location:
        yield location


def submit(instance, location, launch: Launch, tags: dict) -> str:
    """Create the run (the launch's assets of its job, one partition) and put it in the run queue."""
    repo = location.get_repository(REPOSITORY)
    remote_job = location.get_job(JobSubsetSelector(
        location_name=location.name, repository_name=REPOSITORY, job_name=launch.job, op_selection=None,
        asset_selection=set(launch.keys)))
    plan = location.get_execution_plan(remote_job, {}, step_keys_to_execute=None, known_state=None,
                                       instance=instance)
    run_tags = {**remote_job.tags, **tags, "qup/label": launch.label}
    if launch.partition:
        run_tags["dagster/partition"] = launch.partition
    run = instance.create_run(
        job_name=launch.job, run_id=None, run_config={}, resolved_op_selection=None, step_keys_to_execute=None,
        op_selection=None, status=None, root_run_id=None, parent_run_id=None, tags=run_tags,
        job_snapshot=remote_job.job_snapshot, execution_plan_snapshot=plan.execution_plan_snapshot,
        parent_job_snapshot=remote_job.parent_job_snapshot, remote_job_origin=remote_job.get_remote_origin(),
        job_code_origin=remote_job.get_python_origin(), asset_selection=frozenset(launch.keys),
        asset_check_selection=None, asset_graph=repo.asset_graph)
    instance.submit_run(run.run_id, workspace=None)
    return run.run_id


def _line(entry) -> str | None:
    """What the terminal shows of one event: user log lines, step starts/ends, failures, run status."""
    ev = entry.dagster_event
    if ev is None:
        return entry.user_message if entry.level >= 20 else None
    kind = ev.event_type
    if kind == DagsterEventType.STEP_START:
        return f"{ev.step_key}: started"
    if kind == DagsterEventType.STEP_SUCCESS:
        return f"{ev.step_key}: done"
    if kind == DagsterEventType.STEP_FAILURE:
        data = ev.step_failure_data
        user = data.user_failure_data if data else None
        why = user.description if user and user.description else (data.error.message.strip() if data and data.error else "")
        return f"{ev.step_key}: FAILED: {why}"
    if kind == DagsterEventType.ASSET_CHECK_EVALUATION:
        check = ev.asset_check_evaluation_data
        if check.passed:
            return None
        level = "WARN" if check.severity == dg.AssetCheckSeverity.WARN else "FAILED"
        return f"check {check.check_name} on {check.asset_key.path[-1]} {level}: {check.description or 'see its metadata'}"
    if kind in (DagsterEventType.RUN_FAILURE, DagsterEventType.ENGINE_EVENT) and ev.message and (
            kind == DagsterEventType.RUN_FAILURE or "pid" in ev.message or "monitor" in ev.message.lower()):
        return ev.message
    if kind == DagsterEventType.RUN_DEQUEUED:
        return "launched"
    return None


def follow(instance, runs: dict, out=print, err=None, poll: float = 0.5) -> dict:
    """Stream the runs' log lines ("[label] ...") until every run ends, failures to `err`; {run_id: status}.

    Ctrl-C cancels the runs (queued ones never start, running ones are terminated) and re-raises.
    """
    cursors: dict = {r: None for r in runs}
    status: dict = {}
    try:
        while len(status) < len(runs):
            for run_id, label in runs.items():
                if run_id in status:
                    continue
                conn = instance.event_log_storage.get_records_for_run(run_id, cursor=cursors[run_id], limit=500)
                cursors[run_id] = conn.cursor
                for rec in conn.records:
                    line = _line(rec.event_log_entry)
                    if line:
                        failure = rec.event_log_entry.dagster_event_type in (
                            DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE,
                            DagsterEventType.ASSET_CHECK_EVALUATION)
                        (err if failure and err else out)(f"[{label}] {line}")
                if conn.has_more:
                    continue
                run = instance.get_run_by_id(run_id)
                if run.status in FINISHED:
                    status[run_id] = run.status
                    out(f"[{label}] run {run_id[:8]} {run.status.value.lower()}")
            if len(status) < len(runs):
                time.sleep(poll)
    except KeyboardInterrupt:
        for run_id, label in runs.items():
            if run_id not in status:
                instance.run_coordinator.cancel_run(run_id)
                out(f"[{label}] run {run_id[:8]} canceled")
        raise
    return status
