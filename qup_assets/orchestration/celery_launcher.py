"""Runs on Celery workers (the `distributed` instance profile, deploy/distributed/dagster.yaml).

dagster-celery's `CeleryRunLauncher` sends each run to a Celery queue as one task; a worker on any
machine that shares the instance (Postgres) and the store (QUP_STORE, NFS in a cluster) executes the
whole run, with the job's own executor. A run rather than a step per task: a family's steps hand
each other HF model folders and caches through the store, and one worker per GPU box runs one family
at a time (worker concurrency 1), so a GPU is never shared by two runs.

What this adds to dagster-celery:
- the worker's name on the run (tag `qup/celery_worker`, set by the worker as the task starts), so the
  UI and the tests can tell where a run ran;
- a health check that notices a dead worker: a worker killed with SIGKILL (or a lost machine) leaves its
  task STARTED in the result backend forever; here a run whose worker no longer answers a ping is
  reported failed to run monitoring, which marks the run failed and frees its pool slots.

Start a worker with `qup worker` (it reads broker and backend from the instance's dagster.yaml).
"""

import time

from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster_celery.launcher import CeleryRunLauncher
from dagster_celery.tags import DAGSTER_CELERY_TASK_ID_TAG as TASK_TAG

WORKER_TAG = "qup/celery_worker"


class QupCeleryRunLauncher(CeleryRunLauncher):
    """CeleryRunLauncher whose health check also asks the run's worker whether it is still there."""

    def __init__(self, default_queue: str = "qup", **kwargs):
        super().__init__(default_queue=default_queue, **kwargs)
        from kombu import Exchange, Queue

        # dagster-celery declares only its `dagster` queue and publishes runs with the routing key
        # "<queue>.execute_job"; a queue of another name would be created on the fly with a direct binding
        # ("<queue>") that this key never matches, and the broker would drop every run. Declare the
        # default queue with a topic binding that takes them.
        self.celery.conf.task_queues = [
            Queue(default_queue, Exchange(default_queue, type="topic"), routing_key=f"{default_queue}.#")]

    def check_run_worker_health(self, run) -> CheckRunHealthResult:
        if TASK_TAG not in run.tags:  # not handed to the broker yet
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "no Celery task yet")
        health = super().check_run_worker_health(run)
        worker = run.tags.get(WORKER_TAG)
        if health.status in (WorkerStatus.RUNNING, WorkerStatus.UNKNOWN) and worker:
            # A worker whose cores are busy can miss one ping (seen in CI: a healthy run marked failed on a
            # loaded 2-core machine); only one that misses three in a row, 2 + 4 + 8 s, is taken for dead.
            if not any(self.celery.control.ping(destination=[worker], timeout=t) for t in (2.0, 4.0, 8.0)):
                return CheckRunHealthResult(
                    WorkerStatus.FAILED, f"Celery worker {worker} does not answer: it died or lost its machine")
        return health


def worker_app(instance):
    """The Celery app of the instance's run launcher, with the tasks a worker executes registered, and the
    hook that records the worker's name on each run it starts."""
    from celery.signals import task_prerun
    from dagster._grpc.types import ExecuteRunArgs, ResumeRunArgs
    from dagster._serdes import unpack_value
    from dagster_celery.tasks import create_execute_job_task, create_resume_job_task

    launcher = instance.run_launcher
    if not isinstance(launcher, CeleryRunLauncher):
        raise ValueError(f"the instance's run launcher is {type(launcher).__name__}, not a CeleryRunLauncher: "
                         "point DAGSTER_HOME at a distributed instance (deploy/distributed/dagster.yaml)")
    app = launcher.celery
    create_execute_job_task(app)
    create_resume_job_task(app)

    @task_prerun.connect(weak=False)
    def _record_worker(sender=None, kwargs=None, **_):
        packed = (kwargs or {}).get("execute_job_args_packed")
        if packed is None:
            return
        args = unpack_value(packed, as_type=(ExecuteRunArgs, ResumeRunArgs))
        # The launcher tags the run with the task id just after sending it; tags are read, merged and
        # written back, so write the worker's name after that (or with it), never over it.
        deadline = time.monotonic() + 10
        while TASK_TAG not in instance.get_run_by_id(args.run_id).tags and time.monotonic() < deadline:
            time.sleep(0.1)
        instance.add_run_tags(args.run_id, {WORKER_TAG: sender.request.hostname, TASK_TAG: sender.request.id})

    return app
