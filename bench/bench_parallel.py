"""Two families at once on a small CPU: one process with all cores, or one process per family with a core each?

Work unit: what a family's partition does most, on the tiny study's student size (hidden 128, 4 layers):
pretraining steps (batch 32) and sampled completions through the transformers backend.

  (a) sequential: two units one after the other in one process, torch using every core (the baseline)
  (b) oversubscribed: two processes at once, each torch using every core (what two runs do by default)
  (c) parallel: two processes at once, each with cores / 2 threads (what two family runs get: the study resource gives each cores / runs threads)

Prints wall seconds and the ratio against (a). Run: .venv/bin/python bench/bench_parallel.py
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def unit(model_dir: str, steps: int, prompts: int) -> None:
    """One family-sized slice of work: pretraining steps, then sampling."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qup_assets.backends.base import Request, SamplingParams
    from qup_assets.backends.transformers_backend import TransformersBackend
    from qup_assets.study import SyntheticStudent  # noqa: F401  (imports as the pipeline does)
    from qup_assets.training.pretrain import encode_examples, pretrain

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    text = "Step 1: Add 3: $ 4 + 3 = 7 $\nThe final answer is $\\boxed{7}$."
    examples = encode_examples(tok, ["Q: Mia has 4 apples. She gets 3 more. How many?\n"] * 64, [text] * 64, 256)
    pretrain(model, tok, examples, steps, 32, 1e-4, 0, log=lambda m: None)
    lm = TransformersBackend(model_dir)
    prompt = tok.apply_chat_template([{"role": "user", "content": "Mia has 4 apples. She gets 3 more."}],
                                     tokenize=False, add_generation_prompt=True)
    lm.sample([Request(prompt, i) for i in range(prompts)], SamplingParams(temperature=1.0, max_tokens=128, seed=0))


def _run(model_dir, steps, prompts, threads, copies, times) -> float:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, __file__, "--unit", model_dir, "--steps", str(steps), "--prompts", str(prompts), "--times", str(times)]
    t = time.monotonic()
    procs = [subprocess.Popen(cmd, env=env) for _ in range(copies)]
    assert all(p.wait() == 0 for p in procs)
    return time.monotonic() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--unit")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--times", type=int, default=1)
    args = ap.parse_args()
    if args.unit:
        for _ in range(args.times):
            unit(args.unit, args.steps, args.prompts)
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_sampling import build_model

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "student"
        build_model(model)
        seq = _run(str(model), args.steps, args.prompts, cores, 1, times=2)
        over = _run(str(model), args.steps, args.prompts, cores, 2, times=1)
        par = _run(str(model), args.steps, args.prompts, max(1, cores // 2), 2, times=1)
    print(f"two family-sized units ({args.steps} pretraining steps + {args.prompts} samples each) on {cores} cores:")
    print(f"  (a) sequential, {cores} threads:            {seq:6.1f} s   1.00x")
    print(f"  (b) two processes, {cores} threads each:     {over:6.1f} s   {seq / over:.2f}x")
    print(f"  (c) two processes, {max(1, cores // 2)} thread(s) each:     {par:6.1f} s   {seq / par:.2f}x")


if __name__ == "__main__":
    main()
