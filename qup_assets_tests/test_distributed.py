"""The distributed profile for real: Postgres as the instance, Redis as the Celery broker, two Celery workers
(`qup worker`), the daemon that `qup run` starts, and one shared store, all on 127.0.0.1.

The study is the smaller micro study with a second family. Its shared assets and its micro-qwen partition
must equal the same study run alone on the local launcher (the session's `small_alone`), byte for byte in
what a researcher reads, although a worker running micro-qwen is killed with SIGKILL in the middle.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qup_assets_tests.helpers import assert_same, results_of, small_study_text
from qup_assets_tests.services import postgres_server, redis_server

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent


def _start_worker(name: str, env: dict, log: Path, core: int | None) -> subprocess.Popen:
    """`qup worker` in its own process group (its pool child too), on one core when there are several."""
    def pin():
        if core is not None:
            os.sched_setaffinity(0, {core})

    return subprocess.Popen([sys.executable, "-m", "qup_assets.cli", "worker", "--name", name], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=pin)


def _stop(proc: subprocess.Popen, sig=signal.SIGTERM):
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _family_runs(instance, family: str):
    import dagster as dg

    runs = instance.get_runs(filters=dg.RunsFilter(job_name="family_assets", tags={"dagster/partition": family}))
    return sorted(runs, key=lambda r: instance.get_run_record_by_id(r.run_id).create_timestamp)


def _step_done(instance, run_id: str, step: str) -> bool:
    import dagster as dg

    return any(e.step_key == step for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_SUCCESS))


def _wait_workers(env: dict, names: list[str], timeout: float = 120):
    """Both workers answer a ping through the broker (so neither misses the first runs)."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]
    app = dg.DagsterInstance.get().run_launcher.celery
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        replies = {list(r)[0].split("@")[0] for r in app.control.ping(timeout=1.0) or []}
        if set(names) <= replies:
            return
        time.sleep(1)
    raise AssertionError(f"workers {names} did not come up (answered: {replies})")


def test_family_runs_spread_over_two_celery_workers_and_survive_a_killed_worker(small_alone, tmp_path, monkeypatch):
    import dagster as dg

    _, alone = small_alone
    with postgres_server() as pg, redis_server() as redis:
        home, store = tmp_path / "home", tmp_path / "store"
        home.mkdir()
        (home / "dagster.yaml").write_text((REPO / "deploy" / "distributed" / "dagster.yaml").read_text())
        study = tmp_path / "micro_small.yaml"
        study.write_text(small_study_text(second_family=True))
        env = dict(os.environ, DAGSTER_HOME=str(home), QUP_STORE=str(store), QUP_POSTGRES_URL=pg,
                   QUP_CELERY_BROKER=f"{redis}/0", QUP_CELERY_BACKEND=f"{redis}/1", QUP_STUDY=str(study))
        for k in ("DAGSTER_HOME", "QUP_STORE", "QUP_POSTGRES_URL", "QUP_CELERY_BROKER", "QUP_CELERY_BACKEND"):
            monkeypatch.setenv(k, env[k])
        # one core (and torch thread) each, of the cores this machine lets pytest use (the xdist worker itself is
        # pinned to one of them; its parent is not)
        allowed = sorted(os.sched_getaffinity(os.getppid()) | os.sched_getaffinity(0))
        pins = allowed[:2] if len(allowed) > 1 else [None, None]
        logs = {n: tmp_path / f"{n}.log" for n in ("w1", "w2")}
        workers = {n: _start_worker(n, env, logs[n], pins[i]) for i, n in enumerate(("w1", "w2"))}
        try:
            _wait_workers(env, ["w1", "w2"])
            instance = dg.DagsterInstance.get()
            qup = subprocess.Popen([sys.executable, "-m", "qup_assets.cli", "run", "--study", str(study)], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            # In the middle of micro-qwen's run (its student built, the rest to do), its worker dies.
            deadline, victim = time.monotonic() + 480, None
            while time.monotonic() < deadline and qup.poll() is None:
                runs = _family_runs(instance, "micro-qwen")
                if runs and "qup/celery_worker" in runs[0].tags and _step_done(instance, runs[0].run_id, "base_model"):
                    victim = runs[0]
                    break
                time.sleep(0.5)
            assert victim is not None, qup.communicate()[0][-3000:]
            name = victim.tags["qup/celery_worker"].split("@")[0]
            _stop(workers[name], signal.SIGKILL)  # the worker and the run it executes, as a lost machine
            out = qup.communicate(timeout=480)[0]
            assert qup.returncode == 1, out[-3000:]
            failed = instance.get_run_by_id(victim.run_id)
            assert failed.status == dg.DagsterRunStatus.FAILURE
            why = [e.message for e in instance.all_logs(victim.run_id) if e.message]
            assert any("does not answer" in m for m in why), why[-5:]  # run monitoring's health check

            # The other family ran on the other worker, at the same time, and succeeded.
            (llama,) = _family_runs(instance, "micro-llama")
            assert llama.status == dg.DagsterRunStatus.SUCCESS, out[-3000:]
            assert llama.tags["qup/celery_worker"].split("@")[0] != name
            a, b = (instance.get_run_record_by_id(r.run_id) for r in (victim, llama))
            assert max(a.start_time, b.start_time) < min(a.end_time, b.end_time)  # they overlapped

            # The worker comes back; the re-run resumes (the student is not rebuilt) and ends like a local run.
            workers[name] = _start_worker(name, env, logs[name], pins[0 if name == "w1" else 1])
            _wait_workers(env, ["w1", "w2"])
            r = subprocess.run([sys.executable, "-m", "qup_assets.cli", "run", "--study", str(study)], env=env,
                               capture_output=True, text=True, timeout=480)
            assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
            rerun = _family_runs(instance, "micro-qwen")[-1]
            assert rerun.status == dg.DagsterRunStatus.SUCCESS and rerun.run_id != victim.run_id
            assert not _step_done(instance, rerun.run_id, "base_model")  # reused from before the kill
            built = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(["micro_small", "base_model"]),
                                      asset_partitions=["micro-qwen"]), limit=10).records
            assert len(built) == 1
        finally:
            for w in workers.values():
                _stop(w)
            subprocess.run(["pkill", "-f", str(home)], check=False)  # the daemon qup run started for this home
        # The report covers two families here and one there; everything else must be the same.
        mine = {k: v for k, v in results_of(store, "micro_small").items() if "paradox_report" not in k}
        ref = {k: v for k, v in results_of(alone.store, "micro_small").items() if "paradox_report" not in k}
        assert {k for k in mine if "micro-llama" not in k} == set(ref)
        assert_same({k: mine[k] for k in ref}, ref)
        llama = [k for k in mine if "micro-llama" in k and k.endswith(".parquet")]
        assert llama and all(len(mine[k]) for k in llama)
