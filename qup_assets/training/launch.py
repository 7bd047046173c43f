"""`accelerate launch -m qup_assets.training.launch JOB_DIR`: one fine-tuning job on several devices.

The Dagster asset writes JOB_DIR/job.json and JOB_DIR/records.jsonl and runs this through Dagster Pipes.
Every rank trains; only rank 0 logs to Dagster, publishes the model folder and writes result.json.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from qup_assets.training.finetune import FinetuneJob, finetune


def accelerate_config(num_processes: int, distributed, cuda: bool) -> dict:
    """The `accelerate launch --config_file` contents for a study's training section (study.Distributed)."""
    d = distributed
    cfg = {"compute_environment": "LOCAL_MACHINE", "num_processes": num_processes, "num_machines": d.num_machines,
           "machine_rank": d.machine_rank, "mixed_precision": "bf16" if cuda else "no", "use_cpu": False,
           "rdzv_backend": "static", "same_network": True, "main_training_function": "main", "debug": False}
    if d.num_machines > 1:
        cfg.update(main_process_ip=d.main_process_ip, main_process_port=d.main_process_port)
    if d.strategy == "ddp":
        cfg["distributed_type"] = "MULTI_GPU" if num_processes > 1 or d.num_machines > 1 else "NO"
    elif d.strategy == "fsdp":
        cfg["distributed_type"] = "FSDP"
        cfg["fsdp_config"] = {
            "fsdp_sharding_strategy": "FULL_SHARD", "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_backward_prefetch": "BACKWARD_PRE", "fsdp_state_dict_type": "FULL_STATE_DICT",
            "fsdp_offload_params": False, "fsdp_use_orig_params": True, "fsdp_sync_module_states": True,
            "fsdp_cpu_ram_efficient_loading": True, "fsdp_activation_checkpointing": d.activation_checkpointing}
    else:
        cfg["distributed_type"] = "DEEPSPEED"
        cfg["deepspeed_config"] = {"zero_stage": 3, "zero3_init_flag": True, "zero3_save_16bit_model": True,
                                   "offload_optimizer_device": "none", "offload_param_device": "none",
                                   "gradient_clipping": 1.0}
    return cfg


def main(argv: list[str] | None = None) -> int:
    job_dir = Path((argv if argv is not None else sys.argv[1:])[0])
    job = FinetuneJob(**json.loads((job_dir / "job.json").read_text()))
    records = [json.loads(line) for line in (job_dir / "records.jsonl").read_text().splitlines() if line]
    rank0 = int(os.environ.get("RANK", "0")) == 0
    if not rank0:
        finetune(job, records, log=lambda m: None, is_main=False)
        return 0
    if os.environ.get("DAGSTER_PIPES_CONTEXT"):
        from dagster_pipes import open_dagster_pipes

        with open_dagster_pipes() as pipes:
            result = finetune(job, records, log=pipes.log.info, is_main=True)
            world = os.environ.get("WORLD_SIZE", "1")
            pipes.log.info(f"rank 0 of {world}: {result.steps} steps, train loss {result.train_loss:.4f}, "
                           f"{result.wall_time_s}s")
    else:
        result = finetune(job, records, is_main=True)
    (job_dir / "result.json").write_text(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
