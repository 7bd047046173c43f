"""Orchestration on real Dagster instances: what is out of date (code and data versions, and Dagster's own
stale status agreeing), the run worker health check that run monitoring uses, and the instance check."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.data_version import StaleStatus
from dagster._core.events import EngineEventData

from qup_assets.assets.metadata import versioned
from qup_assets.cli import main
from qup_assets.orchestration.launcher import LocalRunLauncher, proc_stat
from qup_assets.orchestration.staleness import outdated, report_outdated
from qup_assets_tests.services import require_distributed_extra

REPO = Path(__file__).resolve().parent.parent
FAMILIES = dg.StaticPartitionsDefinition(["fam-a", "fam-b"])


def _defs(per_family_version: str = "1", pool_value: int = 1, offset: int = 0) -> dg.Definitions:
    """pool -> samples[family] -> scores[family] -> report (over every family), each with a content data version."""

    @dg.asset(code_version="1")
    def pool() -> dg.Output[int]:
        return versioned(pool_value)

    @dg.asset(code_version=per_family_version, partitions_def=FAMILIES)
    def samples(pool: int) -> dg.Output[int]:
        return versioned(pool + 1)

    @dg.asset(code_version="1", partitions_def=FAMILIES)
    def scores(context: dg.AssetExecutionContext, samples: int) -> dg.Output[int]:
        return versioned(samples + 1 + (offset if context.partition_key == "fam-a" else 0))

    @dg.asset(code_version="1")
    def report(scores: dict) -> dg.Output[int]:
        return versioned(sum(scores.values()))

    return dg.Definitions(assets=[pool, samples, scores, report])


def _stale(defs, instance, family):
    graph = defs.resolve_asset_graph()
    keys = [k for k in graph.toposorted_asset_keys if graph.get(k).partitions_def is not None]
    return [k.to_user_string() for k in outdated(graph, instance, keys, family)]


def _report_stale(defs, instance):
    return report_outdated(defs.resolve_asset_graph(), instance, dg.AssetKey("report"))


def _materialize(defs, instance, names, family=None):
    assets = [a for a in defs.assets if a.key.to_user_string() in names]
    others = [a for a in defs.assets if a.key.to_user_string() not in names]
    result = dg.materialize(assets + [a.to_source_asset() for a in others], instance=instance, partition_key=family)
    assert result.success


def _full(defs, instance):
    _materialize(defs, instance, {"pool"})
    for fam in ("fam-a", "fam-b"):
        _materialize(defs, instance, {"samples", "scores"}, fam)
    _materialize(defs, instance, {"report"})


def test_nothing_is_outdated_after_a_full_run_and_missing_partitions_are():
    with dg.instance_for_test() as instance:
        defs = _defs()
        _materialize(defs, instance, {"pool"})
        assert _stale(defs, instance, "fam-a") == ["samples", "scores"]  # never materialized
        for fam in ("fam-a", "fam-b"):
            _materialize(defs, instance, {"samples", "scores"}, fam)
        assert _report_stale(defs, instance) == "never materialized"
        _materialize(defs, instance, {"report"})
        assert _stale(defs, instance, "fam-a") == [] and _stale(defs, instance, "fam-b") == []
        assert _report_stale(defs, instance) is None
        assert outdated(defs.resolve_asset_graph(), instance, [dg.AssetKey("pool")], None) == []


def test_a_code_version_change_reruns_the_asset_and_its_descendants_in_each_family_separately():
    with dg.instance_for_test() as instance:
        _full(_defs("1"), instance)
        v2 = _defs("2")  # samples' code (or the study section it reads) changed
        assert _stale(v2, instance, "fam-a") == ["samples", "scores"]
        assert _stale(v2, instance, "fam-b") == ["samples", "scores"]
        _materialize(v2, instance, {"samples", "scores"}, "fam-a")
        assert _stale(v2, instance, "fam-a") == []
        assert _stale(v2, instance, "fam-b") == ["samples", "scores"]  # the other family is untouched
        assert outdated(v2.resolve_asset_graph(), instance, [dg.AssetKey("pool")], None) == []  # nothing upstream


def test_identical_content_does_not_cascade_and_changed_content_does():
    with dg.instance_for_test() as instance:
        _full(_defs(), instance)
        _materialize(_defs(), instance, {"pool"})  # recomputed, same content: a new timestamp, the same data version
        assert _stale(_defs(), instance, "fam-a") == [] and _stale(_defs(), instance, "fam-b") == []
        assert _report_stale(_defs(), instance) is None
        _materialize(_defs(), instance, {"scores"}, "fam-a")  # a newer child does not make its parent stale
        assert _stale(_defs(), instance, "fam-a") == []
        changed = _defs(pool_value=5)  # same code, different content (new data upstream)
        _materialize(changed, instance, {"pool"})
        assert _stale(changed, instance, "fam-a") == ["samples", "scores"]
        assert _stale(changed, instance, "fam-b") == ["samples", "scores"]


def test_the_report_over_every_family_sees_one_familys_changed_content():
    with dg.instance_for_test() as instance:
        _full(_defs(), instance)
        _materialize(_defs(), instance, {"samples", "scores"}, "fam-b")  # same content
        assert _report_stale(_defs(), instance) is None
        _materialize(_defs(offset=10), instance, {"scores"}, "fam-a")  # fam-a's scores changed
        assert _report_stale(_defs(), instance) == "scores[fam-a] changed content"
        _materialize(_defs(offset=10), instance, {"report"})
        assert _report_stale(_defs(), instance) is None


def _dagster_stale(defs, instance, family) -> list:
    """What the UI shows as unsynced for one family (Dagster's own stale status), plus what reads from those:
    Dagster marks a child only once its parent has new content; a run that recomputes the parent must
    recompute the child in the same run."""
    from dagster._utils.test.data_versions import get_stale_status_resolver

    graph = defs.resolve_asset_graph()
    resolver = get_stale_status_resolver(instance, list(defs.assets))
    keys = [k for k in graph.toposorted_asset_keys if graph.get(k).partitions_def is not None]
    stale: list = []
    for k in keys:
        if resolver.get_status(k, family) != StaleStatus.FRESH or graph.get(k).parent_keys & set(stale):
            stale.append(k)
    return [k.to_user_string() for k in stale]


def test_outdated_agrees_with_dagsters_stale_status_for_family_partitions():
    with dg.instance_for_test() as instance:
        steps = [
            (_defs(), lambda d: _materialize(d, instance, {"pool"})),  # families missing
            (_defs(), lambda d: _full(d, instance)),  # everything fresh
            (_defs(), lambda d: _materialize(d, instance, {"pool"})),  # identical content upstream
            (_defs("2"), lambda d: None),  # samples' code version changed
            (_defs("2"), lambda d: _materialize(d, instance, {"samples", "scores"}, "fam-a")),  # one family redone
            (_defs("2", pool_value=3), lambda d: _materialize(d, instance, {"pool"})),  # new content upstream
        ]
        seen = []
        for defs, step in steps:
            step(defs)
            for fam in ("fam-a", "fam-b"):
                ours, theirs = _stale(defs, instance, fam), _dagster_stale(defs, instance, fam)
                assert ours == theirs, (len(seen), fam, ours, theirs)
                seen.append(tuple(ours))
        assert () in seen and ("samples", "scores") in seen  # both verdicts were reached


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def test_run_monitoring_health_check_sees_a_dead_or_zombie_run_worker():
    launcher = {"module": "qup_assets.orchestration.launcher", "class": "LocalRunLauncher"}
    with dg.instance_for_test(overrides={"run_launcher": launcher}) as instance:
        assert isinstance(instance.run_launcher, LocalRunLauncher)

        @dg.op
        def noop():
            return None

        run = instance.create_run_for_job(dg.GraphDefinition("g", node_defs=[noop]).to_job())
        assert instance.run_launcher.check_run_worker_health(run).status.value == "RUNNING"  # not started yet
        for reap in (True, False):  # killed and reaped; killed and left a zombie by its parent
            worker = _sleeper()
            instance.report_engine_event(f"Started process for run (pid: {worker.pid}).", run,
                                         EngineEventData.in_process(worker.pid))
            assert instance.run_launcher.check_run_worker_health(run).status.value == "RUNNING"
            os.kill(worker.pid, signal.SIGKILL)
            if reap:
                worker.wait()
            else:
                deadline = time.monotonic() + 30
                while (proc_stat(worker.pid) or ["?"])[0] != "Z":
                    assert time.monotonic() < deadline, "the killed worker never became a zombie"
                    time.sleep(0.01)
            health = instance.run_launcher.check_run_worker_health(run)
            assert health.status.value == "FAILED" and str(worker.pid) in health.msg
            worker.wait()


def test_a_launcher_whose_package_is_missing_is_one_line_before_any_run(isolated, capsys):
    home = isolated / "dagster_home"
    yaml_text = (home / "dagster.yaml").read_text().replace(
        "run_launcher:\n  module: qup_assets.orchestration.launcher\n  class: LocalRunLauncher",
        "run_launcher:\n  module: dagster_aws.ecs\n  class: EcsRunLauncher")  # dagster-aws: not installed
    assert "dagster_aws" in yaml_text
    (home / "dagster.yaml").write_text(yaml_text)
    assert main(["run", "--study", "micro"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install dagster-aws==0.29." in err and "run_launcher" in err
    assert sorted(p.name for p in home.iterdir()) == ["dagster.yaml"]  # no instance storage, no run
    assert not (isolated / "store" / "studies").exists()


@pytest.mark.parametrize("url, says", [
    ("postgresql+psycopg2://postgres@127.0.0.1:1/dagster", "Postgres at postgresql+psycopg2://127.0.0.1:1"),
    ("postgresql://postgres@127.0.0.1:1/dagster", "must start with postgresql+psycopg2://"),
])
def test_the_distributed_profile_with_postgres_down_is_one_line_before_any_run(isolated, capsys, monkeypatch, url,
                                                                              says):
    require_distributed_extra()
    home = isolated / "dagster_home"
    (home / "dagster.yaml").write_text((REPO / "deploy" / "distributed" / "dagster.yaml").read_text())
    monkeypatch.setenv("QUP_POSTGRES_URL", url)
    monkeypatch.setenv("QUP_CELERY_BROKER", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("QUP_CELERY_BACKEND", "redis://127.0.0.1:1/1")
    assert main(["run", "--study", "micro"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err, err
    assert "postgres@" not in err  # the URL's user (and a password) stay out of the message
    assert not (isolated / "store" / "studies").exists()


def test_a_celery_broker_that_is_down_is_one_line_that_says_what_to_start(tmp_path, monkeypatch):
    require_distributed_extra()
    from qup_assets.orchestration.instance import InstanceError, check_services

    monkeypatch.setenv("QUP_CELERY_BROKER", "redis://127.0.0.1:1/0")
    data = {"run_launcher": {"module": "qup_assets.orchestration.celery_launcher", "class": "QupCeleryRunLauncher",
                             "config": {"broker": {"env": "QUP_CELERY_BROKER"}}}}
    with pytest.raises(InstanceError, match=r"Celery broker at redis://127.0.0.1:1 .* is down .*start it \(redis-server\)"):
        check_services(data, tmp_path / "dagster.yaml")
    monkeypatch.delenv("QUP_CELERY_BROKER")
    with pytest.raises(InstanceError, match=r"\$QUP_CELERY_BROKER, which is not set"):
        check_services(data, tmp_path / "dagster.yaml")


@pytest.mark.parametrize("running, expected", [(0, 2), (1, 2), (2, 1), (5, 1)])
def test_torch_threads_share_the_cores_among_the_runs_the_queue_lets_go(tmp_path, running, expected, monkeypatch):
    from qup_assets.assets import resources
    from qup_assets.assets.resources import StudyResource

    monkeypatch.setattr(resources, "usable_cores", lambda: 2)
    with dg.instance_for_test(overrides={"concurrency": {"runs": {"max_concurrent_runs": 2}}}) as instance:
        for _ in range(running):
            instance.add_run(dg.DagsterRun(job_name="g", status=dg.DagsterRunStatus.STARTED))
        res = StudyResource(study="micro", store_dir=str(tmp_path), store_root=str(tmp_path))
        assert res.threads_for(instance) == expected
        assert StudyResource(study="micro", store_dir="x", store_root="x", torch_threads=3).threads_for(instance) == 3


def test_the_report_refreshes_itself_after_ui_runs_once_every_family_is_in(isolated):
    """paradox_report's automation condition, evaluated as the daemon's sensor does, on a graph of the same
    shape (shared asset -> per-family asset -> one report over every family)."""
    from qup_assets.assets.report import LAUNCHED_BY_QUP, REFRESH
    from qup_assets.definitions import build_definitions

    defs = build_definitions("micro")
    report = defs.resolve_assets_def(dg.AssetKey(["micro", "paradox_report"]))
    assert report.automation_conditions_by_key[report.key] == REFRESH
    assert defs.resolve_sensor_def("micro_report_refresh").default_status == dg.DefaultSensorStatus.RUNNING

    families = dg.DynamicPartitionsDefinition(name="fams")

    @dg.asset
    def pool() -> int:
        return 1

    @dg.asset(partitions_def=families)
    def evals(pool: int) -> int:
        return pool

    @dg.asset(automation_condition=REFRESH)
    def paradox_report(evals: dict) -> int:
        return len(evals)

    toy = dg.Definitions(assets=[pool, evals, paradox_report])

    def family(fam, tags=None):
        dg.materialize([evals, pool.to_source_asset()], instance=instance, partition_key=fam, tags=tags)

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("fams", ["a", "b"])
        tick = dg.evaluate_automation_conditions(defs=toy, instance=instance)  # the sensor's first tick
        assert tick.get_num_requested(paradox_report.key) == 0  # nothing in yet
        dg.materialize([pool], instance=instance)

        def requested() -> int:
            nonlocal tick
            tick = dg.evaluate_automation_conditions(defs=toy, instance=instance, cursor=tick.cursor)
            return tick.get_num_requested(paradox_report.key)

        family("a")
        family("b", tags=LAUNCHED_BY_QUP)
        assert requested() == 1  # every family in, one from the UI: refresh
        dg.materialize([paradox_report, evals.to_source_asset()], instance=instance)
        assert requested() == 0  # current: nothing to do
        family("a", tags=LAUNCHED_BY_QUP)
        assert requested() == 0  # qup run refreshes the report itself: no second report run
        instance.add_dynamic_partitions("fams", ["c"])  # a new family, added in the UI's partition picker
        assert requested() == 0
        family("b")
        assert requested() == 0  # waits while a family (c) is missing
        family("c")
        assert requested() == 1  # the new family is in: refresh
