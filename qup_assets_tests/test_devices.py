"""Which GPUs each engine runs on (qup_assets/devices.py): leases all or none, freed by the kernel when a step's
process dies, CUDA_VISIBLE_DEVICES numbered as the machine sees them, and studies whose engines cannot be given
their GPUs refused at load with the setting to change. No GPU needed: a lease is a lock and an environment."""

import os
import signal
import subprocess
import sys
import textwrap
import time

from pathlib import Path

import dagster as dg
import pytest

from qup_assets import devices
from qup_assets.assets.resources import ACCELERATOR, StudyResource
from qup_assets.study import StudyError, gpus, load_study

HOLD = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from qup_assets.devices import lease
    ids, n, ready = [int(i) for i in sys.argv[1].split(",")], int(sys.argv[2]), Path(sys.argv[3])
    with lease(ids, n, f"holder {ready.name}", log=lambda m: print(m, flush=True), poll=0.05) as got:
        ready.write_text(os.environ["CUDA_VISIBLE_DEVICES"])
        time.sleep(float(sys.argv[4]))
""")


def _holder(tmp_path, ids, n, name, seconds):
    ready = tmp_path / name
    proc = subprocess.Popen([sys.executable, "-c", HOLD, ",".join(map(str, ids)), str(n), str(ready), str(seconds)],
                            env={**os.environ, "QUP_GPU_LOCKS": str(tmp_path / "locks")}, stdout=subprocess.PIPE,
                            text=True)
    return proc, ready


def _wait_for(path, proc, timeout=60):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, f"{path.name} never leased"
        time.sleep(0.05)
    return path.read_text()


def test_steps_get_disjoint_gpus_and_a_killed_step_frees_its_own(tmp_path):
    """Three GPUs: a step holding two leaves one; a step that needs two waits (holding none), and gets them the
    moment the first is SIGKILLed, as the OOM killer would end it."""
    first, first_ready = _holder(tmp_path, [0, 1, 2], 2, "first", 600)
    try:
        assert _wait_for(first_ready, first) == "0,1"
        small, small_ready = _holder(tmp_path, [0, 1, 2], 1, "small", 0)
        assert _wait_for(small_ready, small) == "2"
        assert small.wait(timeout=60) == 0
        second, second_ready = _holder(tmp_path, [0, 1, 2], 2, "second", 0)
        line = second.stdout.readline()  # it says what it waits for, and who holds it
        assert "waiting for 2 of GPUs [0, 1, 2]" in line and "holder first" in line, line
        assert not second_ready.exists()
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        assert sorted(_wait_for(second_ready, second).split(",")) in (["0", "1"], ["0", "2"], ["1", "2"])
        assert second.wait(timeout=60) == 0
    finally:
        first.kill()


def test_a_lease_sets_and_restores_cuda_visible_devices_in_the_machines_numbering(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")  # a machine (or container) that shows four GPUs
    with devices.lease([0, 1, 2, 3], 2, "t", log=lambda m: None, where=tmp_path) as got:
        assert got == [0, 1] and os.environ["CUDA_VISIBLE_DEVICES"] == "4,5"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "4,5,6,7"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    with devices.lease([2, 3], 1, "t", log=lambda m: None, where=tmp_path):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "2"
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    with devices.lease([0], 0, "cpu", where=tmp_path) as got:  # a CPU study's step: nothing leased or changed
        assert got == [] and "CUDA_VISIBLE_DEVICES" not in os.environ
    with pytest.raises(devices.DeviceError, match="needs 3 GPUs; this study's hardware leaves 2"):
        with devices.lease([0, 1], 3, "big", where=tmp_path):
            pass


def test_paper_assigns_the_oracles_gpus_to_nobody_else():
    s = load_study("paper")
    assert gpus.student_gpus(s) == [0, 1, 2, 3]
    assert {f: gpus.gpus_needed(s, "generate", f) for f in s.families} == dict.fromkeys(s.families, 1)
    assert gpus.gpus_needed(s, "train") == 4 and gpus.gpus_needed(s, "reward") == 4
    assert gpus.gpus_needed(s, "reward", reward_model="skywork-rm") == 1
    assert gpus.gpus_needed(s, "oracle") == 0  # an openai server: its GPUs are its own
    fam = s.families["qwen2.5-math-1.5b"]  # the same student behind a server elsewhere
    remote = fam.model_copy(update={"backend": fam.backend.model_copy(update={"kind": "openai"})})
    served = s.model_copy(update={"families": {**s.families, "qwen2.5-math-1.5b": remote}})
    assert gpus.gpus_needed(served, "generate", "qwen2.5-math-1.5b") == 0
    assert all(gpus.gpus_needed(load_study("micro"), stage, "micro-qwen") == 0
               for stage in ("generate", "train", "reward", "oracle", "model"))


@pytest.mark.parametrize("change, message", [
    (("num_processes: 4 ", "num_processes: 8 "),
     "training.num_processes asks for 8 GPUs, but hardware leaves 4 to the study's engines (gpus_per_node 8 less "
     "oracle_gpus [4, 5, 6, 7]): lower training.num_processes to 4"),
    (("engine: {tensor_parallel_size: 4, gpu", "engine: {tensor_parallel_size: 8, gpu"),
     "reward_models.qwen2.5-math-rm-72b.engine.tensor_parallel_size asks for 8 GPUs"),
    (("oracle_gpus: [4, 5, 6, 7]", "oracle_gpus: [4, 5, 6, 8]"), "oracle_gpus [4, 5, 6, 8] must be distinct GPU ids"),
    (("executor: multiprocess", "executor: in_process"), "hardware: (GPUs) needs executor: multiprocess"),
])
def test_a_gpu_layout_that_cannot_work_is_refused_at_load(tmp_path, change, message):
    text = open(load_study("paper").source_path).read()
    assert change[0] in text
    (tmp_path / "paper.yaml").write_text(text.replace(change[0], change[1]))
    with pytest.raises(StudyError) as e:
        load_study(str(tmp_path / "paper.yaml"))
    assert message in str(e.value)


# A real run of a GPU study's executor (one process per step): each step leases through the study resource and
# records what its engines would see.
@dg.op(tags=ACCELERATOR["op_tags"])
def sample_step(context, study: StudyResource):
    with study.gpus(context, "generate", "micro-qwen"):
        Path(study.store_dir, "sample").write_text(os.environ["CUDA_VISIBLE_DEVICES"])


@dg.op(tags=ACCELERATOR["op_tags"])
def train_step(context, study: StudyResource):
    with study.gpus(context, "train", "micro-qwen"):
        Path(study.store_dir, "train").write_text(os.environ["CUDA_VISIBLE_DEVICES"])
    Path(study.store_dir, "after").write_text(os.environ.get("CUDA_VISIBLE_DEVICES", "unset"))


@dg.job(executor_def=dg.multiprocess_executor, resource_defs={"study": StudyResource.configure_at_launch()})
def gpu_steps():
    sample_step()
    train_step()


@pytest.mark.timeout(300)
def test_each_step_of_a_gpu_study_runs_on_the_gpus_it_leased(tmp_path, monkeypatch):
    monkeypatch.setenv("QUP_GPU_LOCKS", str(tmp_path / "locks"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    study = tmp_path / "micro.yaml"
    study.write_text(open(load_study("micro").source_path).read().replace(
        "training: {", "training: {launcher: accelerate, num_processes: 2, ")
        + "hardware: {gpu_memory_gb: 80, gpus_per_node: 3, oracle_gpus: [1]}\nexecutor: multiprocess\n")
    store = tmp_path / "store"
    run_config = {"resources": {"study": {"config": {"study": str(study), "store_dir": str(store / "studies" / "micro"),
                                                     "store_root": str(store)}}}}
    (store / "studies" / "micro").mkdir(parents=True)
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        result = dg.execute_job(dg.reconstructable(gpu_steps), instance=instance, run_config=run_config)
        assert result.success
        logs = [e.message for e in instance.all_logs(result.run_id) if e.message]
    out = store / "studies" / "micro"
    assert (out / "sample").read_text() in ("0", "2") and (out / "train").read_text() == "0,2"  # never the Oracle's 1
    assert (out / "after").read_text() == "unset"
    assert any("train_step[micro-qwen]: on GPU 0,2 (CUDA_VISIBLE_DEVICES=0,2)" in m for m in logs), logs
