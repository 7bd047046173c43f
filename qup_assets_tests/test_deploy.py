"""The Kubernetes deployment (deploy/): what can be checked without a cluster, checked with the libraries a
cluster would run. The Helm values become the instance's dagster.yaml the way the Dagster chart's templates
render them, which dagster validates; dagster-k8s builds the run pod's Job from them; the Oracle manifest is
the server paper.yaml names. And the per-run GPU step limit of the multiprocess executor, in a real run."""

import json
import re
import time
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import dagster as dg
import pytest
import yaml

from qup_assets.assets.resources import ACCELERATOR, ACCELERATOR_TAG
from qup_assets.definitions import build_definitions, study_executor
from qup_assets.study import REPO_ROOT, load_study

DEPLOY = REPO_ROOT / "deploy"
VALUES = yaml.safe_load((DEPLOY / "k8s" / "values.yaml").read_text())
ORACLE = list(yaml.safe_load_all((DEPLOY / "k8s" / "oracle.yaml").read_text()))
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
RELEASE, NAMESPACE = "qup", "research"


def chart_instance(values: dict) -> dict:
    """The dagster.yaml the Dagster chart renders from these values (templates/configmap-instance.yaml and
    helpers/instance/*.tpl), for the sections qup sets: run launcher, storage, run queue, concurrency, run
    monitoring, additionalInstanceConfig."""
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    run_k8s = {re.sub(r"[A-Z]", lambda m: "_" + m[0].lower(), k): v for k, v in k8s["runK8sConfig"].items()}
    pg = {"postgres_db": {"username": "dagster", "password": {"env": "DAGSTER_PG_PASSWORD"},
                          "hostname": f"{RELEASE}-postgresql", "db_name": "dagster", "port": 5432, "params": {}}}
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    monitoring = values["dagsterDaemon"]["runMonitoring"]
    concurrency = values["concurrency"]
    assert concurrency["enabled"], "the chart renders concurrency only when enabled"
    return {
        "run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": {
            "load_incluster_config": True, "job_namespace": NAMESPACE,
            "image_pull_policy": k8s["imagePullPolicy"], "service_account_name": f"{RELEASE}-dagster",
            "dagster_home": "/opt/dagster/dagster_home", "instance_config_map": f"{RELEASE}-dagster-instance",
            "postgres_password_secret": "dagster-postgresql-secret",
            "volumes": k8s["volumes"], "volume_mounts": k8s["volumeMounts"], "run_k8s_config": run_k8s}},
        **{f"{s}_storage": {"module": f"dagster_postgres.{m}", "class": c, "config": pg} for s, m, c in [
            ("run", "run_storage", "PostgresRunStorage"), ("event_log", "event_log", "PostgresEventLogStorage"),
            ("schedule", "schedule_storage", "PostgresScheduleStorage")]},
        "run_coordinator": {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator", "config": {
            {"maxConcurrentRuns": "max_concurrent_runs", "dequeueIntervalSeconds": "dequeue_interval_seconds"}[k]: v
            for k, v in queued.items()}},
        "concurrency": {
            "pools": {"default_limit": concurrency["pools"]["defaultLimit"],
                      "granularity": concurrency["pools"]["granularity"]},
            "runs": {"max_concurrent_runs": concurrency["runs"]["maxConcurrentRuns"]}},
        "run_monitoring": {"enabled": monitoring["enabled"], "start_timeout_seconds": monitoring["startTimeoutSeconds"],
                           "poll_interval_seconds": monitoring["pollIntervalSeconds"],
                           "free_slots_after_run_end_seconds": monitoring["freeSlotsAfterRunEndSeconds"]},
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
        **values["additionalInstanceConfig"],
    }


def image_extras() -> set[str]:
    """The extras deploy/Dockerfile installs, e.g. {"vllm", "k8s", "distributed"}."""
    m = re.search(r'pip install -e "\.\[([^\]]+)\]"', (DEPLOY / "Dockerfile").read_text())
    assert m, "deploy/Dockerfile must install the package with its extras"
    return set(m[1].split(","))


def test_the_chart_renders_an_instance_that_dagster_accepts_and_the_image_can_load(tmp_path):
    from dagster._core.instance.config import dagster_instance_config
    from dagster._serdes.config_class import class_from_code_pointer

    instance = chart_instance(VALUES)
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(instance))
    config, _ = dagster_instance_config(str(tmp_path))  # raises on anything dagster would refuse
    # one `accelerator` slot per run pod that may hold GPUs
    assert config["concurrency"]["pools"]["default_limit"] == config["concurrency"]["runs"]["max_concurrent_runs"]

    # Every class the instance names imports, and its package is in the extras the image installs.
    packages = {re.split(r"[\[=<>]", r)[0] for e in image_extras() for r in PYPROJECT["project"]["optional-dependencies"][e]}
    for section in ("run_launcher", "run_storage", "event_log_storage", "schedule_storage"):
        module = instance[section]["module"]
        class_from_code_pointer(module, instance[section]["class"])
        assert module.split(".")[0].replace("_", "-") in packages, f"the image lacks the package of {module}"


def test_the_run_pod_gets_the_gpus_shared_memory_tolerations_and_the_store(tmp_path, monkeypatch):
    """dagster-k8s's own code builds the Job a family run would get, from the values as the chart passes them."""
    from dagster._core.storage.dagster_run import DagsterRun
    from dagster_k8s import K8sRunLauncher
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import construct_dagster_k8s_job

    kubeconfig = tmp_path / "kubeconfig"  # the client is built but never called: nothing leaves the machine
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    config = {**chart_instance(VALUES)["run_launcher"]["config"], "load_incluster_config": False,
              "kubeconfig_file": str(kubeconfig)}
    launcher = K8sRunLauncher(**config)

    deployment = VALUES["dagster-user-deployments"]["deployments"][0]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"]
    code_server = K8sContainerContext.create_from_config({"k8s": {  # what the chart hands the code server
        "env_secrets": [s["name"] for s in deployment["envSecrets"]], "env": deployment["env"],
        "volumes": deployment["volumes"], "volume_mounts": deployment["volumeMounts"]}})
    image = f"{deployment['image']['repository']}:{deployment['image']['tag']}"
    context = K8sContainerContext.create_for_run(DagsterRun(job_name="family_assets", run_id="r1"), launcher,
                                                 include_run_tags=False).merge(code_server)
    job = construct_dagster_k8s_job(context.get_k8s_job_config(image, launcher), ["dagster", "api", "execute_run"],
                                    "dagster-run-r1", user_defined_k8s_config=context.run_k8s_config,
                                    component="run_worker")
    pod = job.spec.template.spec
    (container,) = pod.containers
    assert container.image == f"registry.example.com/qup:{PYPROJECT['project']['version']}"
    # a whole node's GPUs (the Oracle has its own node there, so the study's steps may lease all of them)
    assert int(container.resources.limits["nvidia.com/gpu"]) == load_study("paper").hardware.gpus_per_node
    mounts = {m.mount_path: m.name for m in container.volume_mounts}
    volumes = {v.name: v for v in pod.volumes}
    assert volumes[mounts["/dev/shm"]].empty_dir.medium == "Memory"
    assert volumes[mounts["/store"]].persistent_volume_claim.claim_name == "qup-store"
    env = {e.name: e.value for e in container.env}
    assert env["QUP_STORE"] == "/store" and env["HF_HOME"].startswith("/store/")
    assert "qup-oracle-key" in {s.secret_ref.name for s in container.env_from if s.secret_ref}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in [
        {k: v for k, v in t.to_dict().items() if v is not None} for t in pod.tolerations]
    assert job.spec.backoff_limit == 0


def test_no_image_moves_under_a_running_study():
    deployment = VALUES["dagster-user-deployments"]["deployments"][0]
    assert deployment["image"]["tag"] == PYPROJECT["project"]["version"]
    assert deployment["image"]["pullPolicy"] == "IfNotPresent"
    images = [c["image"] for d in ORACLE if d["kind"] == "Deployment" for c in d["spec"]["template"]["spec"]["containers"]]
    assert images and all(":" in i and not i.endswith(":latest") for i in images)
    assert re.search(r"^FROM \S+:\d", (DEPLOY / "Dockerfile").read_text(), re.M), "the base image has a version tag"


def test_the_oracle_service_is_the_one_paper_yaml_names():
    oracle = load_study("paper").oracle
    url = urlparse(oracle.backend.base_url)
    service = next(d for d in ORACLE if d["kind"] == "Service")
    deployment = next(d for d in ORACLE if d["kind"] == "Deployment")
    assert service["metadata"]["name"] == url.hostname
    assert url.port in [p["port"] for p in service["spec"]["ports"]]
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (server,) = pod["spec"]["containers"]
    assert server["command"] == ["vllm", "serve"] and server["args"][0] == oracle.backend.model
    args = dict(a.removeprefix("--").split("=", 1) for a in server["args"][1:])
    assert int(args["tensor-parallel-size"]) == server["resources"]["limits"]["nvidia.com/gpu"]
    assert int(args["port"]) == url.port
    key = next(e for e in server["env"] if e["name"] == "VLLM_API_KEY")["valueFrom"]["secretKeyRef"]
    assert key["key"] == oracle.backend.api_key_env  # the key the run pods send is the one the server wants
    mounts = {m["mountPath"]: m["name"] for m in server["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"


def test_every_accelerator_step_of_the_paper_study_is_limited_per_run(tmp_path):
    defs = build_definitions("paper", store=str(tmp_path))
    ops = {k.path[-1]: a.op for a in defs.assets for k in a.keys}
    gpu = {name for name, op in ops.items() if op.pool == ACCELERATOR["pool"]}
    assert {"base_model", "native_samples", "native_rewards", "native_adaptation", "native_checkpoints",
            "native_eval", "base_eval", "oracle_refined_traces"} <= gpu
    assert all((op.pool == "accelerator") == (op.tags.get(ACCELERATOR_TAG) == "accelerator") for op in ops.values())
    assert defs.resolve_job_def("family_assets").executor_def.name == "multiprocess"


# A real run under the paper study's executor: two accelerator steps and one CPU step, each recording when it
# ran. The executor starts ready steps in name order up to its max_concurrent (the cores, 2 here): without
# the per-run limit the two GPU steps would start together.
@dg.op(tags=ACCELERATOR["op_tags"], config_schema={"out": str})
def a_gpu(context):
    _hold(context, "a_gpu")


@dg.op(tags=ACCELERATOR["op_tags"], config_schema={"out": str})
def b_gpu(context):
    _hold(context, "b_gpu")


@dg.op(config_schema={"out": str})
def c_cpu(context):
    _hold(context, "c_cpu")


def _hold(context, name: str) -> None:
    """Each step marks its start; a GPU step then holds its slot until the CPU step has started (or 120 s), so
    "the CPU step ran beside a GPU step" is an event the GPU step saw, not a guess from wall clocks."""
    out = Path(context.op_config["out"])
    start = time.time()
    (out / f"{name}.start").touch()
    saw_cpu = None
    if name != "c_cpu":
        deadline = time.monotonic() + 120
        while not (out / "c_cpu.start").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        saw_cpu = (out / "c_cpu.start").exists()
    time.sleep(0.2)
    (out / name).write_text(json.dumps([start, time.time(), saw_cpu]))


def three_steps() -> dg.JobDefinition:
    return dg.job(name="three_steps", executor_def=study_executor(load_study("paper")))(lambda: (a_gpu(), b_gpu(), c_cpu()))


@pytest.mark.timeout(300)
def test_the_multiprocess_executor_runs_one_gpu_step_at_a_time_per_run(tmp_path):
    run_config = {"ops": {n: {"config": {"out": str(tmp_path)}} for n in ("a_gpu", "b_gpu", "c_cpu")}}
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        result = dg.execute_job(dg.reconstructable(three_steps), instance=instance, run_config=run_config)
        assert result.success
    spans = {n: json.loads((tmp_path / n).read_text()) for n in ("a_gpu", "b_gpu", "c_cpu")}
    pids = {e.step_key: e.pid for e in result.all_events if e.event_type_value == "STEP_START"}
    assert len(set(pids.values())) == 3, "every step in a process of its own"

    def overlap(a, b):
        return spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]

    assert not overlap("a_gpu", "b_gpu"), spans  # the run's GPUs are never shared by two steps
    first = min(("a_gpu", "b_gpu"), key=lambda n: spans[n][0])
    assert spans[first][2], spans  # the CPU step started while the first GPU step held its slot: not held back


def test_one_set_of_gpu_pins_for_the_image_the_gpu_check_and_the_package():
    """deploy/gpu-constraints.txt is the GPU pin set: the Dockerfile installs under it, bench/gpu_wheels.py
    resolves under it, and every pin is inside the range pyproject.toml declares (a pin outside it would make
    pip move the package, as a bare vllm requirement moved torch and transformers)."""
    from packaging.requirements import Requirement

    pins = {Requirement(line).name: Requirement(line) for line in
            (DEPLOY / "gpu-constraints.txt").read_text().splitlines() if line and not line.startswith("#")}
    assert set(pins) == {"vllm", "torch", "transformers", "accelerate", "trl"}
    assert all(str(r.specifier).startswith("==") for r in pins.values())
    declared = [Requirement(r) for r in PYPROJECT["project"]["dependencies"] + PYPROJECT["project"][
        "optional-dependencies"]["vllm"]]
    for req in declared:
        if req.name in pins:
            version = str(pins[req.name].specifier).removeprefix("==")
            assert req.specifier.contains(version), f"{req.name} {version} is outside pyproject's {req}"
    assert "-c deploy/gpu-constraints.txt" in (DEPLOY / "Dockerfile").read_text()
    assert '"deploy" / "gpu-constraints.txt"' in (REPO_ROOT / "bench" / "gpu_wheels.py").read_text()
