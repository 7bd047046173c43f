"""The GPU check: a paper-shaped study on one CUDA GPU through `qup run`, within 8 minutes, asserting what it shows.

One family whose student is a randomly initialised HF model of ~0.3B parameters, built and pretrained here on the
GPU (no hub access needed); the transformers backend; the synthetic reward model scoring on the GPU; SFT and DFT
through `accelerate launch` with FSDP on one process; evaluation; the report; paper.yaml's process-per-step
executor, with the step's GPU leased as on a GPU node (hardware: one GPU). Then, in this process, on the same
student and prompts: the sampler's throughput against a raw batched `model.generate` (measured in the same run),
and vLLM's offline engine where vllm imports.

It asserts, and exits 1 with the reasons otherwise: the study finished within TOTAL_LIMIT_S; each stage within its
STAGE_LIMITS_S; each GPU stage ran on the GPU (a process of the step in nvidia-smi's compute apps, or, where a
container hides pids, GPU memory above the baseline during the step); GPU memory back at its baseline after every
step; qup's sampler at least MIN_SPEED_RATIO x the raw `generate` call. Exit 2 on a machine without CUDA. It prints
one table of those figures.

Run: make gpu-smoke   (or python bench/gpu_smoke.py [--keep DIR]); on a bare CUDA machine without network, with
the wheels that bench/gpu_wheels.py gathered: pip install --no-index --find-links wheels -e .
"""

import argparse
import fnmatch
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
TOTAL_LIMIT_S = 480
MIN_SPEED_RATIO = 0.8
# Wall-clock seconds each step may take on one H100 (generous: about 3x what the stage should need there).
STAGE_LIMITS_S = {"base_model": 150, "reward_model": 120, "native_samples": 90, "*_checkpoints": 90,
                  "*_evaluation": 60, "*_rewards": 45, "rm_diagnostics": 45, "*_adaptation": 45, "*_traces": 60,
                  "paradox_report": 60, "*": 30}
# The steps that must have used the GPU (everything else is CPU work: verification, tables, the report).
GPU_STEPS = ["base_model", "native_samples", "*_checkpoints", "*_evaluation", "*_rewards", "rm_diagnostics",
             "*_adaptation", "compat_selected_traces"]


def smoke_study(gpu_memory_gb: float = 80.0) -> str:
    return f"""name: gpu_smoke
description: The GPU check - one ~0.3B synthetic student on one GPU, every stage, paper.yaml's executor.
problems: {{kind: synthetic, size: 400, seed: 1, min_steps: 2, max_steps: 4, max_operand: 20}}
benchmarks:
  - name: synth
    source: {{kind: synthetic, size: 100, seed: 101, min_steps: 1, max_steps: 4, max_operand: 20}}
families:
  smoke-qwen:
    student: {{kind: synthetic, architecture: qwen2, style: qwen, hidden_size: 1024, num_layers: 24,
              pretrain_steps: 400, pretrain_lr: 5.0e-4, pretrain_batch_size: 64}}
    backend: {{kind: transformers, batch_size: 128}}
oracle: {{kind: symbolic}}
reward_models:
  - {{name: synthetic-rm, kind: synthetic}}
sampling: {{n: 4, temperature: 1.0, max_tokens: 192, seed: 0}}
training: {{objectives: [sft, dft], lr: 1.0e-5, batch_size: 32, micro_batch_size: 8, epochs: 1, max_length: 512,
           launcher: accelerate, num_processes: 1, distributed: {{strategy: fsdp, activation_checkpointing: true}}}}
evaluation: {{k: 2, temperature: 1.0, max_tokens: 192, seed: 0, bootstrap_samples: 200}}
min_common_fraction: 0.0
hardware: {{gpu_memory_gb: {gpu_memory_gb:.0f}, gpus_per_node: 1}}
executor: multiprocess
"""


def limit_for(step: str) -> float:
    return next(v for k, v in STAGE_LIMITS_S.items() if fnmatch.fnmatch(step, k))


def _smi(*query: str) -> list[list[str]]:
    out = subprocess.run(["nvidia-smi", *query, "--format=csv,noheader,nounits", "-i", "0"], check=True,
                         capture_output=True, text=True, timeout=30).stdout
    return [[c.strip() for c in line.split(",")] for line in out.strip().splitlines() if line.strip()]


class Sampler:
    """Calls `sample()` every `every` seconds on a thread, from entering the block until leaving it."""

    every = 1.0

    def __init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every)

    def sample(self):
        raise NotImplementedError

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class GPUWatch(Sampler):
    """GPU 0's memory in use, and the pids of its compute processes, every 0.5 s."""

    every = 0.5

    def __init__(self):
        super().__init__()
        self.samples: list[tuple[float, int, set[int]]] = []

    def sample(self):
        used = int(_smi("--query-gpu=memory.used")[0][0])
        try:
            pids = {int(r[0]) for r in _smi("--query-compute-apps=pid") if r and r[0].isdigit()}
        except subprocess.CalledProcessError:
            pids = set()
        self.samples.append((time.time(), used, pids))


def _descendants(pid: int) -> set[int]:
    """pid and every process whose parent chain leads to it, alive now (read from /proc)."""
    parents = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                parents[int(p.name)] = int(p.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    out, grew = {pid}, True
    while grew:
        new = {c for c, par in parents.items() if par in out} - out
        out |= new
        grew = bool(new)
    return out


class StepTrees(Sampler):
    """Each running step's process tree (the step's pid, its vLLM workers, accelerate's ranks), sampled while the
    study runs, so a GPU pid seen by nvidia-smi can be traced to its step."""

    def __init__(self, home: Path):
        super().__init__()
        self.home, self.trees = home, {}
        os.environ["DAGSTER_HOME"] = str(home)

    def sample(self):
        import dagster as dg

        try:
            instance = dg.DagsterInstance.get()
            for r in instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
                for e in instance.all_logs(r.dagster_run.run_id):
                    if e.is_dagster_event and e.dagster_event.event_type_value == "STEP_START" and e.pid:
                        self.trees.setdefault(e.step_key, set()).update(_descendants(e.pid))
        except Exception:  # noqa: BLE001 (the instance may be mid-write; the next sample reads it)
            pass


def step_spans(home: Path) -> dict[str, tuple[float, float, bool]]:
    """step key -> (start, end, succeeded) from the Dagster event log of every run in `home`."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(home)
    instance = dg.DagsterInstance.get()
    spans: dict[str, list] = {}
    for r in instance.get_run_records():
        for e in instance.all_logs(r.dagster_run.run_id):
            if not e.is_dagster_event or not e.step_key:
                continue
            kind = e.dagster_event.event_type_value
            if kind == "STEP_START":
                spans[e.step_key] = [e.timestamp, None, False]
            elif kind in ("STEP_SUCCESS", "STEP_FAILURE") and e.step_key in spans:
                spans[e.step_key][1:] = [e.timestamp, kind == "STEP_SUCCESS"]
    return {k: (s, e if e is not None else time.time(), ok) for k, (s, e, ok) in spans.items()}


def judge(spans, samples, trees, baseline: int) -> tuple[list[list], list[str]]:
    """One row per step (seconds, limit, on the GPU, peak MiB, memory back) and the failures among them."""
    rows, failures = [], []
    pids_seen = any(p for _, _, p in samples)
    ordered = sorted(spans.items(), key=lambda kv: kv[1][0])
    for i, (step, (start, end, ok)) in enumerate(ordered):
        during = [(m, p) for t, m, p in samples if start <= t <= end]
        peak = max((m for m, _ in during), default=0)
        gpu = (any(p & trees.get(step, set()) for _, p in during) if pids_seen
               else peak > baseline + SLACK_MIB)
        nxt = ordered[i + 1][1][0] if i + 1 < len(ordered) else float("inf")
        gap = [m for t, m, _ in samples if end + 2 <= t < nxt]
        back = not gap or min(gap) <= baseline + SLACK_MIB
        secs, limit = end - start, limit_for(step)
        must_gpu = any(fnmatch.fnmatch(step, g) for g in GPU_STEPS)
        rows.append([step, f"{secs:.0f}", f"{limit:.0f}", ("yes" if gpu else "NO") if must_gpu else ("yes" if gpu else "-"),
                     str(peak), "yes" if back else "NO"])
        if not ok:
            failures.append(f"{step} did not succeed")
        if secs > limit:
            failures.append(f"{step} took {secs:.0f} s, over its limit of {limit:.0f} s")
        if must_gpu and not gpu:
            failures.append(f"{step} did not use the GPU")
        if not back:
            failures.append(f"GPU memory stayed at {min(gap)} MiB after {step} (baseline {baseline} MiB)")
    return rows, failures


def throughput(model_dir: Path, n_prompts: int = 256, max_tokens: int = 192) -> dict:
    """Samples/s of qup's transformers sampler and of raw batched `model.generate` on the same prompts and model
    (and vLLM's offline engine where it imports), measured here one after the other."""
    import torch

    from qup_assets.backends.base import Request, SamplingParams
    from qup_assets.backends.prompting import render_prompt
    from qup_assets.backends.transformers_backend import TransformersBackend
    from qup_assets.study import Prompt
    from qup_assets.world.generator import generate

    lm = TransformersBackend(model_dir, batch_size=128)
    tok, model = lm.tokenizer, lm.model
    prompts = [render_prompt(tok, Prompt(), p.problem) for p in generate(n_prompts, seed=4242)]
    kw = dict(do_sample=True, temperature=1.0, top_p=1.0, max_new_tokens=max_tokens, pad_token_id=tok.pad_token_id,
              eos_token_id=tok.eos_token_id)
    out = {}
    for name in ("raw generate", "qup sampler", "raw generate"):  # the baseline before and after (warm-up, drift)
        torch.cuda.synchronize()
        t = time.perf_counter()
        if name == "qup sampler":
            lm.sample([Request(p, 0) for p in prompts], SamplingParams(temperature=1.0, max_tokens=max_tokens, seed=0))
        else:
            with torch.inference_mode():
                for lo in range(0, len(prompts), 128):
                    batch = tok(prompts[lo:lo + 128], return_tensors="pt", padding=True, add_special_tokens=False)
                    model.generate(**batch.to(model.device), **kw)
        torch.cuda.synchronize()
        out[name] = len(prompts) / (time.perf_counter() - t)  # the second raw run replaces the first
    del lm, model
    torch.cuda.empty_cache()
    try:
        import vllm  # noqa: F401
    except ImportError:
        out["vllm"] = None
        return out
    from qup_assets.backends.vllm_backend import VLLMBackend

    v = VLLMBackend(model_dir, seed=0, gpu_memory_utilization=0.5, max_model_len=1024)
    t = time.perf_counter()
    v.sample([Request(p, 0) for p in prompts], SamplingParams(temperature=1.0, max_tokens=max_tokens, seed=0))
    out["vllm"] = len(prompts) / (time.perf_counter() - t)
    return out


def table(rows: list[list], head: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


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
    device = torch.cuda.get_device_properties(0)
    root = Path(args.keep or tempfile.mkdtemp(prefix="qup-gpu-smoke-"))
    home, store = root / "dagster_home", root / "store"
    home.mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load((REPO / "dagster.yaml").read_text())  # one run at a time
    cfg["concurrency"] = {"runs": {"max_concurrent_runs": 1}, "pools": {"granularity": "op"}}
    (home / "dagster.yaml").write_text(yaml.safe_dump(cfg))
    study = root / "gpu_smoke.yaml"
    study.write_text(smoke_study(device.total_memory / 1e9))
    env = {**os.environ, "DAGSTER_HOME": str(home), "QUP_STORE": str(store), "QUP_STUDY": str(study),
           "QUP_GPU_LOCKS": str(root / "gpu-locks")}

    baseline = int(_smi("--query-gpu=memory.used")[0][0])
    failures = []
    started = time.time()
    with GPUWatch() as watch, StepTrees(home) as trees:
        proc = subprocess.Popen([sys.executable, "-m", "qup_assets.cli", "run", "--study", str(study)], env=env)
        try:
            rc = proc.wait(timeout=TOTAL_LIMIT_S)
        except subprocess.TimeoutExpired:
            proc.send_signal(2)  # Ctrl-C: qup run cancels its runs
            rc = proc.wait(timeout=120)
            failures.append(f"the study did not finish within {TOTAL_LIMIT_S} s")
        time.sleep(3)
    wall = time.time() - started
    if rc != 0:
        failures.append(f"qup run exited {rc}")
    rows, bad = judge(step_spans(home), watch.samples, trees.trees, baseline)
    failures += bad
    print(f"\ngpu-smoke on {device.name} ({device.total_memory / 2**30:.0f} GiB), torch {torch.__version__}: "
          f"the study took {wall:.0f} s (limit {TOTAL_LIMIT_S}); GPU memory baseline {baseline} MiB")
    print(table(rows, ["step", "seconds", "limit", "on GPU", "peak MiB", "memory back"]))
    model_dir = store / "studies" / "gpu_smoke" / "artifacts" / "base_model" / "smoke-qwen" / "model"
    if (model_dir / "config.json").is_file():
        speed = throughput(model_dir)
        ratio = speed["qup sampler"] / speed["raw generate"]
        print(table([[k, f"{v:.1f}" if v else "(vllm not installed)"] for k, v in speed.items()],
                    ["sampling 256 prompts x 192 tokens", "samples/s"]))
        print(f"qup sampler / raw generate: {ratio:.2f}x (at least {MIN_SPEED_RATIO})")
        if ratio < MIN_SPEED_RATIO:
            failures.append(f"qup's sampler ran at {ratio:.2f}x a raw generate call (floor {MIN_SPEED_RATIO})")
    else:
        failures.append(f"no student folder at {model_dir}: base_model did not finish")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    for f in failures:
        print(f"FAILED: {f}")
    print("gpu-smoke: OK" if not failures else f"gpu-smoke: {len(failures)} check(s) failed")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
