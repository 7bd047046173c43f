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
