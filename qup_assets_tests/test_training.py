"""Fine-tuning with TRL (SFT and DFT) on real tiny HF models: the product's own trainer, in process and under accelerate."""

import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from qup_assets.backends.prompting import render_prompt
from qup_assets.study import Prompt, Training
from qup_assets.training.finetune import (
    FinetuneJob,
    OverlengthError,
    build_trainer,
    build_training_set,
    finetune,
    stops_with_eos,
)

from .helpers import key, synthetic_traces


def _tok(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _job(model_dir, out, objective="sft", **kw):
    args = dict(base_model=str(model_dir), out_dir=str(out), objective=objective, lr=2e-3, batch_size=8,
                micro_batch_size=8, epochs=1, max_length=512, seed=0)
    return FinetuneJob(**{**args, **kw})


def _trainer(model_dir, records, objective, tmp_path):
    """The product's own trainer for a job (build_trainer is what finetune() trains with)."""
    return build_trainer(_job(model_dir, tmp_path / objective, objective), records, log=lambda m: None)


def test_dft_loss_is_token_loss_times_detached_probability(tiny_model_dir, tmp_path):
    import torch

    ids, problems, comps, _ = synthetic_traces(8)
    data = build_training_set(_tok(tiny_model_dir), Prompt(), ids, problems, comps, 512)
    losses = {}
    for objective in ("sft", "dft"):
        trainer = _trainer(tiny_model_dir, data.records, objective, tmp_path)
        batch = next(iter(trainer.get_train_dataloader()))
        trainer.model.eval()
        with torch.no_grad():
            losses[objective] = float(trainer.compute_loss(trainer.model, dict(batch)))
            logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)[mask]
    nll = float(-logp.mean())
    dft = float((-logp * logp.exp()).sum() / mask.sum())
    assert losses["sft"] == pytest.approx(nll, rel=1e-4)
    assert losses["dft"] == pytest.approx(dft, rel=1e-4)
    assert losses["dft"] < losses["sft"]  # each token's loss is scaled by its probability, which is below 1


def test_training_sequences_end_with_eos_and_mask_the_prompt(tiny_model_dir, tmp_path):
    tok = _tok(tiny_model_dir)
    ids, problems, comps, _ = synthetic_traces(6)
    for prompt in (Prompt(), Prompt(format="plain", template="qwen-boxed")):
        data = build_training_set(tok, prompt, ids, problems, comps, 512)
        trainer = _trainer(tiny_model_dir, data.records, "sft", tmp_path)
        for row, problem in zip(trainer.train_dataset, problems):
            trained = [lab != -100 for lab in row["labels"]]
            completion = [t for t, m in zip(row["input_ids"], trained) if m]
            assert tok.eos_token_id in completion[-2:], prompt.format  # eos (then the template's newline)
            prompt_ids = row["input_ids"][: trained.index(True)]
            assert tok.decode(prompt_ids) == render_prompt(tok, prompt, problem)  # the prompt is never trained on


def test_overlength_traces_are_dropped_with_a_count_or_refused(tiny_model_dir):
    tok = _tok(tiny_model_dir)
    ids, problems, comps, _ = synthetic_traces(10)
    comps[3] = comps[3] + " step" * 600
    data = build_training_set(tok, Prompt(), ids, problems, comps, 256)
    assert data.dropped == ["p3"] and len(data.records) == 9 and data.drop_rate == pytest.approx(0.1)
    assert all(n <= 256 for n in data.lengths)
    with pytest.raises(OverlengthError, match="1 of 10 traces are longer than training.max_length=256"):
        build_training_set(tok, Prompt(), ids, problems, comps, 256, on_overlength="fail")


def test_finetuned_checkpoint_loads_generates_and_stops(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    tok = _tok(tiny_model_dir)
    ids, problems, comps, _ = synthetic_traces(48)
    data = build_training_set(tok, Prompt(), ids, problems, comps, 512)
    res = finetune(_job(tiny_model_dir, tmp_path / "ck", "sft", epochs=20, lr=1e-2), data.records, log=lambda m: None)
    assert res.steps == 120 and res.loss_curve[-1][1] < res.loss_curve[0][1] / 2
    assert json.loads((tmp_path / "ck" / "qup_training.json").read_text())["job"]["objective"] == "sft"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left behind
    model = AutoModelForCausalLM.from_pretrained(res.path)
    assert model.config.eos_token_id == tok.eos_token_id
    prompts = [render_prompt(tok, Prompt(), p) for p in problems[:8]]
    # The barely pretrained base never stops within 200 tokens; fine-tuned with eos in the labels, it does.
    assert stops_with_eos(str(tiny_model_dir), prompts, max_tokens=200) < 0.25
    assert stops_with_eos(res.path, prompts, max_tokens=200) >= 0.75


def test_a_finished_identical_job_is_reused_and_a_changed_one_is_not(tiny_model_dir, tmp_path):
    from dataclasses import replace

    from qup_assets.training.finetune import finished_result, records_hash

    ids, problems, comps, _ = synthetic_traces(8)
    data = build_training_set(_tok(tiny_model_dir), Prompt(), ids, problems, comps, 512)
    job = _job(tiny_model_dir, tmp_path / "ck", data_hash=records_hash(data.records, "fp"))
    assert finished_result(job) is None  # nothing trained yet
    res = finetune(job, data.records, log=lambda m: None)
    again = finished_result(job)
    assert again is not None and again.train_loss == res.train_loss and again.loss_curve == res.loss_curve
    other = replace(job, data_hash=records_hash(data.records[:-1], "fp"))
    assert finished_result(other) is None  # other data: retrain
    assert finished_result(replace(job, lr=1e-4)) is None  # other hyper-parameters: retrain


def test_lora_checkpoint_is_merged_into_a_plain_model_folder(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    ids, problems, comps, _ = synthetic_traces(16)
    data = build_training_set(_tok(tiny_model_dir), Prompt(), ids, problems, comps, 512)
    res = finetune(_job(tiny_model_dir, tmp_path / "lora", lora={"r": 4, "alpha": 8, "dropout": 0.0}, lr=1e-2),
                   data.records, log=lambda m: None)
    assert not (tmp_path / "lora" / "adapter_config.json").exists()  # merged: loads without peft
    merged = AutoModelForCausalLM.from_pretrained(res.path)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    changed = [n for (n, a), (_, b) in zip(merged.named_parameters(), base.named_parameters()) if not (a == b).all()]
    assert changed and all("proj" in n for n in changed)  # only the adapted linear layers moved


def test_grid_points_cover_objectives_times_grid():
    from qup_assets.study import Grid
    from qup_assets.training.grid import grid_points, point_name

    t = Training(objectives=["sft", "dft"], grid=Grid(lr=[2e-5, 5e-5], batch_size=[128, 256]))
    points = grid_points(t)
    assert len(points) == 8 and ("dft", 5e-5, 128) in points
    assert point_name("dft", 5e-5, 128, t) == "dft-lr5e-05-bs128"
    assert grid_points(Training()) == [("sft", 5e-5, 256), ("dft", 5e-5, 256)]


@pytest.mark.slow
def test_checkpoints_asset_trains_on_two_processes_with_accelerate(micro_study, monkeypatch):
    """The real native_checkpoints asset with `launcher: accelerate, num_processes: 2`: two CPU ranks (gloo)
    under `accelerate launch`, rank 0 reporting through Dagster Pipes, the same effective batch as one process."""
    from qup_assets.cli import main

    ms = micro_study.copy(micro_study.root.parent / "accelerate").env(monkeypatch)
    table = ms.store / "tables" / "native_checkpoints" / "micro-qwen.parquet"
    single = pd.read_parquet(table)
    text = ms.study.read_text()
    two = text.replace("training: {", "training: {launcher: accelerate, num_processes: 2, ", 1)
    assert two != text
    ms.study.write_text(two)
    assert main(["run", "--study", str(ms.study), "--select", "key:native_checkpoints"]) == 0
    instance = dg.DagsterInstance.get()
    event = instance.get_latest_materialization_event(key("native_checkpoints"))
    assert event.asset_materialization.metadata["launcher"].value == "accelerate"
    logs = [e.message for e in instance.all_logs(event.run_id) if e.message]
    assert sum("rank 0 of 2:" in m for m in logs) == 2, logs[-20:]  # one line per objective, from rank 0 only
    launched = pd.read_parquet(table)
    assert list(launched["objective"]) == list(single["objective"])
    # batch_size is the effective batch: split over two ranks, the optimizer takes as many steps as on one
    assert launched["steps"].tolist() == single["steps"].tolist() and (launched["examples"] == single["examples"]).all()
    assert (launched["eos_rate"] > 0).all()
    for path in launched["checkpoint"]:
        assert json.loads((ms.store / path / "qup_training.json").read_text())["job"]["objective"] in {"sft", "dft"}


@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "deepspeed_zero3"])
def test_the_accelerate_configuration_is_what_accelerate_launch_reads(strategy, tmp_path):
    """The study's training.distributed becomes the --config_file that `accelerate launch` parses (its own
    parser and validation, nothing launched): strategy, devices and machines as the study says."""
    import yaml
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    from qup_assets.study import Distributed
    from qup_assets.training.launch import accelerate_config

    d = Distributed(strategy=strategy, num_machines=2, machine_rank=1, main_process_ip="10.0.0.1")
    path = tmp_path / "accelerate.yaml"
    path.write_text(yaml.safe_dump(accelerate_config(16, d, cuda=True)))
    args = launch_command_parser().parse_args(["--config_file", str(path), "-m", "qup_assets.training.launch", "x"])
    args, _, _ = _validate_launch_command(args)
    assert (args.num_processes, args.num_machines, args.machine_rank) == (16, 2, 1)
    assert (args.main_process_ip, args.main_process_port, args.mixed_precision) == ("10.0.0.1", 29500, "bf16")
    assert (args.multi_gpu, args.use_fsdp, args.use_deepspeed) == {
        "ddp": (True, False, False), "fsdp": (False, True, False), "deepspeed_zero3": (False, False, True)}[strategy]
    if strategy == "fsdp":
        assert args.fsdp_sharding_strategy == "FULL_SHARD" and args.fsdp_activation_checkpointing
        assert args.fsdp_state_dict_type == "FULL_STATE_DICT"  # rank 0 saves whole weights
    if strategy == "deepspeed_zero3":
        assert args.zero_stage == 3 and args.zero3_save_16bit_model
    one = accelerate_config(1, Distributed(), cuda=False)  # one process on CPU: no distributed launcher at all
    assert one["distributed_type"] == "NO" and one["mixed_precision"] == "no"


@pytest.mark.parametrize("strategy", ["fsdp", "ddp"])
def test_paper_training_arguments_pass_the_checks_transformers_runs_on_gpus(strategy, tmp_path, monkeypatch):
    """paper.yaml's training as one rank of `accelerate launch` on 8 GPUs sees it: accelerate's own parser and
    environment, its FSDP plugin, and the SFTConfig the job builds with CUDA. Trainer refuses FSDP's activation
    checkpointing beside gradient_checkpointing (TRL's default) with a ValueError on every rank; on a CPU
    accelerate drops FSDP, so this builds both halves here and applies that check itself."""
    import yaml
    from accelerate import FullyShardedDataParallelPlugin
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    from qup_assets.study import load_study
    from qup_assets.training.finetune import FinetuneJob, sft_config
    from qup_assets.training.launch import accelerate_config

    training = load_study("paper").training
    distributed = training.distributed.model_copy(update={"strategy": strategy})
    path = tmp_path / "accelerate.yaml"
    path.write_text(yaml.safe_dump(accelerate_config(training.num_processes, distributed, cuda=True)))
    args = launch_command_parser().parse_args(["--config_file", str(path), "-m", "qup_assets.training.launch", "x"])
    args, _, _ = _validate_launch_command(args)
    for k, v in prepare_multi_gpu_env(args).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("WORLD_SIZE", str(training.num_processes))
    monkeypatch.setattr("transformers.training_args.is_torch_bf16_gpu_available", lambda: True)
    job = FinetuneJob(base_model="m", out_dir=str(tmp_path / "out"), objective="dft", lr=training.lr,
                      batch_size=training.batch_size, micro_batch_size=training.micro_batch_size,
                      epochs=training.epochs, max_length=training.max_length, seed=0)
    cfg = sft_config(job, str(tmp_path / "work"), world_size=training.num_processes, cuda=True)
    assert cfg.bf16 and not cfg.use_cpu and cfg.loss_type == "dft"
    assert cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * training.num_processes == 256
    if strategy == "fsdp":
        # the settings a CPU cannot build the plugin with (it initialises parameters on the GPU)
        monkeypatch.setenv("FSDP_SYNC_MODULE_STATES", "false")
        monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "false")
        plugin = FullyShardedDataParallelPlugin()
        assert plugin.activation_checkpointing  # paper.yaml: FSDP recomputes the activations...
        assert not cfg.gradient_checkpointing  # ...so the trainer must not (transformers' ValueError otherwise)
    else:
        assert cfg.gradient_checkpointing  # without FSDP, gradient checkpointing recomputes them


def test_a_bf16_model_folder_is_trained_in_float32(tiny_model_dir, tmp_path):
    """Qwen2.5-Math ships bf16 weights. AdamW must update float32 copies (bf16 only as autocast compute on a
    GPU): at lr 5e-5 most updates are below bf16's resolution of a weight and would be lost."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    bf16 = tmp_path / "bf16-student"
    AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).save_pretrained(bf16)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(bf16)
    ids, problems, comps, _ = synthetic_traces(4)
    data = build_training_set(_tok(bf16), Prompt(), ids, problems, comps, 512)
    trainer = build_trainer(_job(bf16, tmp_path / "out", lr=5e-5), data.records, log=lambda m: None)
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}


def test_bad_distributed_settings_fail_at_load(tmp_path):
    from qup_assets.study import Distributed, Training

    with pytest.raises(ValueError, match="main_process_ip"):
        Distributed(num_machines=2)
    with pytest.raises(ValueError, match="machine_rank 2 must be below"):
        Distributed(num_machines=2, machine_rank=2, main_process_ip="h")
    with pytest.raises(ValueError, match="lora is merged on one process"):
        Training(lora={"r": 8}, distributed={"strategy": "fsdp"})
    with pytest.raises(ValueError, match="split evenly"):
        Training(num_processes=3, distributed={"num_machines": 2, "main_process_ip": "h"})


_KILLABLE = """
import json, sys
from qup_assets.training.finetune import FinetuneJob, finetune
job = FinetuneJob(**json.loads(sys.argv[1]))
finetune(job, json.loads(open(sys.argv[2]).read()), log=lambda m: None)
"""


@pytest.mark.timeout(300)
def test_a_training_run_killed_mid_way_resumes_from_its_step_checkpoint(tiny_model_dir, tmp_path):
    """training.save_steps: the run is SIGKILLed after a step checkpoint; the next run continues from it and
    ends with the weights of an uninterrupted run with the same seed (data order, optimizer, scheduler and
    RNG state all restored)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from dataclasses import asdict

    import torch
    from safetensors.torch import load_file

    from qup_assets.training.finetune import _work_dir

    ids, problems, comps, _ = synthetic_traces(48)
    data = build_training_set(_tok(tiny_model_dir), Prompt(), ids, problems, comps, 512)
    (tmp_path / "records.json").write_text(json.dumps(data.records))
    common = dict(batch_size=4, micro_batch_size=4, epochs=2, save_steps=4, data_hash="d")  # 24 steps
    whole = finetune(_job(tiny_model_dir, tmp_path / "whole", **common), data.records, log=lambda m: None)
    assert whole.steps == 24

    job = _job(tiny_model_dir, tmp_path / "killed", **common)
    proc = subprocess.Popen([sys.executable, "-c", _KILLABLE, json.dumps(asdict(job)), str(tmp_path / "records.json")],
                            env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    work = _work_dir(job)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and not (work / "checkpoint-12").is_dir():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not Path(job.out_dir).exists(), "killed before it finished"
    done = sorted(int(p.name.split("-")[1]) for p in work.glob("checkpoint-*") if (p / "trainer_state.json").is_file())
    assert done and 4 <= done[-1] < 24, done
    (work / "checkpoint-20").mkdir(exist_ok=True)  # as if killed while writing it: no trainer_state.json yet
    (work / "checkpoint-20" / "config.json").write_text("{}")

    said = []
    resumed = finetune(job, data.records, log=said.append)
    assert any(f"resuming from checkpoint-{done[-1]} " in m for m in said), said
    assert not any(f"step {k}/24 " in m for m in said for k in range(1, done[-1] + 1)), said  # not trained again
    assert resumed.steps == 24 and [s for s, _ in resumed.loss_curve] == list(range(1, 25))
    a, b = load_file(Path(whole.path) / "model.safetensors"), load_file(Path(resumed.path) / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    assert not work.exists()  # the temp folder and its step checkpoints are gone once published

    # a different job in the same place never resumes from another job's checkpoints
    from qup_assets.training.finetune import resume_point

    other = _job(tiny_model_dir, tmp_path / "killed", **{**common, "lr": 1e-3})
    work.mkdir(parents=True)
    (work / "qup_job.json").write_text(json.dumps(asdict(job)))
    (work / "checkpoint-8").mkdir()
    assert resume_point(other) is None and not (work / "checkpoint-8").exists()
