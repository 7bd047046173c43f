"""The GPU check: a paper-shaped study on one CUDA GPU, in a few minutes, through `qup run`.

One family whose student is a randomly initialised HF model of ~0.3B parameters built and pretrained here
(the largest synthetic student; no hub access needed), the transformers backend, the synthetic reward model
on the GPU, SFT and DFT on five variants, evaluation, the report; paper.yaml's multiprocess executor (a
process per step). It prints each stage's throughput from the assets' metadata and checks, from
nvidia-smi sampled every 0.5 s, that GPU memory falls back to its baseline after every GPU step (a step's
engine and tensors die with its process). Exit 0 when the study finished and memory came back; 1 when not;
2 on a machine without CUDA.

Run: make gpu-smoke   (or .venv/bin/python bench/gpu_smoke.py [--keep DIR])
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
SLACK_MIB = 512  # a CUDA context left by the run worker itself, allocator caches of CPU steps, rounding


def smoke_study() -> str:
    return """name: gpu_smoke
description: The GPU check - one ~0.3B synthetic student on one GPU, every stage, paper.yaml's executor.
problems: {kind: synthetic, size: 400, seed: 1, min_steps: 2, max_steps: 4, max_operand: 20}
benchmarks:
  - name: synth
    source: {kind: synthetic, size: 100, seed: 101, min_steps: 1, max_steps: 4, max_operand: 20}
families:
  smoke-qwen:
    student: {kind: synthetic, architecture: qwen2, style: qwen, hidden_size: 1024, num_layers: 24,
              pretrain_steps: 400, pretrain_lr: 5.0e-4, pretrain_batch_size: 64}
    backend: {kind: transformers, batch_size: 128}
oracle: {kind: symbolic}
reward_models:
  - {name: synthetic-rm, kind: synthetic}
sampling: {n: 4, temperature: 1.0, max_tokens: 192, seed: 0}
training: {objectives: [sft, dft], lr: 1.0e-5, batch_size: 32, epochs: 1, max_length: 512}
evaluation: {k: 2, temperature: 1.0, max_tokens: 192, seed: 0, bootstrap_samples: 200}
min_common_fraction: 0.0
executor: multiprocess
"""


def gpu_memory_mib() -> int:
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                         check=True, capture_output=True, text=True).stdout
    return int(out.strip().splitlines()[0])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep", help="keep the store and instance in this folder")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available() or shutil.which("nvidia-smi") is None:
        print("gpu-smoke needs a CUDA GPU and nvidia-smi: torch.cuda.is_available() is "
              f"{torch.cuda.is_available()} here (a CPU build of torch, or no GPU visible). Nothing was run.",
              file=sys.stderr)
        return 2
    root = Path(args.keep or tempfile.mkdtemp(prefix="qup-gpu-smoke-"))
    home, store = root / "dagster_home", root / "store"
    home.mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load((REPO / "dagster.yaml").read_text())  # one run and one GPU step at a time
    cfg["concurrency"] = {"runs": {"max_concurrent_runs": 1}, "pools": {"default_limit": 1, "granularity": "op"}}
    (home / "dagster.yaml").write_text(yaml.safe_dump(cfg))
    study = root / "gpu_smoke.yaml"
    study.write_text(smoke_study())
    env = {**os.environ, "DAGSTER_HOME": str(home), "QUP_STORE": str(store), "QUP_STUDY": str(study)}

    baseline = gpu_memory_mib()
    samples: list[tuple[float, int]] = []
    done = threading.Event()

    def poll():
        while not done.is_set():
            samples.append((time.time(), gpu_memory_mib()))
            time.sleep(0.5)

    threading.Thread(target=poll, daemon=True).start()
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "qup_assets.cli", "run", "--study", str(study)], env=env)
    time.sleep(3)
    done.set()
    wall = time.time() - started
    print(f"\ngpu-smoke on {torch.cuda.get_device_name(0)}: qup run exited {proc.returncode} after {wall:.0f} s; "
          f"GPU memory baseline {baseline} MiB, peak {max(m for _, m in samples)} MiB")
    ok = proc.returncode == 0
    os.environ.update(DAGSTER_HOME=str(home))
    ok &= report(samples, baseline)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1


def report(samples: list[tuple[float, int]], baseline: int) -> bool:
    """Per-stage throughput from the materializations; memory back at baseline in every gap after a GPU step."""
    import dagster as dg

    instance = dg.DagsterInstance.get()
    events = [e for r in instance.get_run_records() for e in instance.all_logs(r.dagster_run.run_id)
              if e.is_dagster_event]
    spans: dict[str, list[float]] = {}
    for e in events:
        kind = e.dagster_event.event_type_value
        if kind == "STEP_START":
            spans.setdefault(e.step_key, [e.timestamp, e.timestamp])
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE") and e.step_key in spans:
            spans[e.step_key][1] = e.timestamp
        elif kind == "ASSET_MATERIALIZATION":
            m = e.dagster_event.event_specific_data.materialization
            rates = {k: v.value for k, v in m.metadata.items() if "per_second" in k or k in ("wall_time_s", "generated")}
            if rates:
                print(f"  {m.asset_key.path[-1]:32s} " + ", ".join(f"{k} {v}" for k, v in sorted(rates.items())))
    ok = True
    ordered = sorted(spans.values())
    for (s0, e0), (s1, _) in zip(ordered, ordered[1:] + [[float("inf"), 0]]):
        gap = [m for t, m in samples if e0 + 2 <= t < s1]
        if gap and min(gap) > baseline + SLACK_MIB:
            ok = False
            print(f"  GPU memory stayed at {min(gap)} MiB after a step that ended at {time.ctime(e0)} "
                  f"(baseline {baseline} MiB)")
    print("  GPU memory returned to its baseline after every step" if ok else "  GPU memory did NOT return")
    return ok


if __name__ == "__main__":
    sys.exit(main())
