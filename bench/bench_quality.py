"""Scoring throughput against naive loops measured in the same run.

  NLL:    TransformersBackend.logprobs (length-sorted batches, one forward per batch) vs a per-text loop
          (one forward per trace), in completion tokens per second; then the cached re-run.
  reward: SequenceClassifierRM.score (batched, right-padded) vs one pair per forward, in pairs per second.
  edit distance: rapidfuzz's Levenshtein (what the variants use) vs a numpy row loop (qup's own until
          2026-12-02), on 1,500-character trace pairs: at paper scale one family has ~136K of them.

Run: make bench   (or .venv/bin/python bench/bench_quality.py [--traces 256])
"""

import argparse
import tempfile
import time
from pathlib import Path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--traces", type=int, default=256)
    args = ap.parse_args()

    import torch

    from qup_assets.adaptation.perplexity import cached_logprobs
    from qup_assets.backends.cache import ResponseCache
    from qup_assets.backends.prompting import render_prompt
    from qup_assets.backends.transformers_backend import TransformersBackend
    from qup_assets.mathcore.verify import VerifierPool
    from qup_assets.reward.scorers import SequenceClassifierRM
    from qup_assets.reward.synthetic import train_reward_model
    from qup_assets.study import Prompt, SyntheticStudent
    from qup_assets.world.generator import generate
    from qup_assets.world.student import build_synthetic_student
    from qup_assets.world.styles import STYLES

    tmp = Path(tempfile.mkdtemp())
    spec = SyntheticStudent(kind="synthetic", architecture="qwen2", style="qwen", hidden_size=128, num_layers=4,
                            pretrain_problems=400, pretrain_steps=20)
    with VerifierPool(workers=1) as v:
        build_synthetic_student(spec, "bench", {"min_steps": 2, "max_steps": 4, "max_operand": 20}, tmp / "lm", set(), v,
                                log=lambda m: None, heldout=10)
    lm = TransformersBackend(tmp / "lm", batch_size=32)
    problems = generate(args.traces, seed=77)
    prompts = [render_prompt(lm.tokenizer, Prompt(), p.problem) for p in problems]
    comps = [STYLES["oracle" if i % 2 else "qwen"].render(p.program, p.items) for i, p in enumerate(problems)]

    print(f"\nscoring throughput: {args.traces} traces, {torch.get_num_threads()} threads")
    t = time.perf_counter()
    naive_tokens = 0
    with torch.inference_mode():
        for p, c in zip(prompts, comps):
            p_ids = lm.tokenizer(p, add_special_tokens=False)["input_ids"]
            c_ids = lm.tokenizer(c, add_special_tokens=False)["input_ids"]
            logits = lm.model(input_ids=torch.tensor([p_ids + c_ids])).logits[0, :-1]
            torch.log_softmax(logits.float(), -1)[len(p_ids) - 1 :].gather(-1, torch.tensor(c_ids)[:, None])
            naive_tokens += len(c_ids)
    naive = naive_tokens / (time.perf_counter() - t)
    t = time.perf_counter()
    scored = lm.logprobs(prompts, comps)
    batched = sum(len(s.logprobs) for s in scored) / (time.perf_counter() - t)
    with ResponseCache(tmp / "cache", "nll") as cache:
        cached_logprobs(lm, cache, prompts, comps)
    with ResponseCache(tmp / "cache", "nll") as cache:
        t = time.perf_counter()
        cached_logprobs(lm, cache, prompts, comps)
        warm = naive_tokens / (time.perf_counter() - t)
    print(f"  NLL per-text loop            {naive:10.0f} tokens/s   1.00x")
    print(f"  NLL qup batched              {batched:10.0f} tokens/s   {batched / naive:5.2f}x")
    print(f"  NLL qup cached re-run        {warm:10.0f} tokens/s   {warm / naive:5.2f}x")

    train_reward_model(generate(200, seed=5), tmp / "rm", steps=5, log=lambda m: None)
    rm = SequenceClassifierRM(tmp / "rm", batch_size=32)
    texts = [p.problem for p in problems]
    t = time.perf_counter()
    for p, c in zip(texts, comps):
        rm.score([p], [c])
    one = len(texts) / (time.perf_counter() - t)
    t = time.perf_counter()
    rm.score(texts, comps)
    many = len(texts) / (time.perf_counter() - t)
    print(f"  reward one pair per forward  {one:10.1f} pairs/s    1.00x")
    print(f"  reward qup batched           {many:10.1f} pairs/s    {many / one:5.2f}x")

    from qup_assets.adaptation.similarity import edit_distance

    long = [("\n".join(comps[i : i + 12])[:1500], "\n".join(comps[i + 1 : i + 13])[:1500]) for i in range(20)]
    t = time.perf_counter()
    expected = [numpy_edit_distance(a, b) for a, b in long]
    slow = (time.perf_counter() - t) / len(long)
    t = time.perf_counter()
    for _ in range(20):
        got = [edit_distance(a, b) for a, b in long]
    fast = (time.perf_counter() - t) / (20 * len(long))
    assert got == expected
    print(f"  edit distance numpy row loop {slow * 1e3:10.2f} ms/pair    1.00x")
    print(f"  edit distance qup rapidfuzz  {fast * 1e3:10.3f} ms/pair    {slow / fast:5.0f}x")


def numpy_edit_distance(a: str, b: str) -> int:
    """Levenshtein with one numpy pass per row (the left-to-right dependency via a running min)."""
    import numpy as np

    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    bb = np.frombuffer(b.encode("utf-32-le"), dtype=np.uint32)
    prev = np.arange(len(b) + 1, dtype=np.int64)
    idx = np.arange(len(b) + 1, dtype=np.int64)
    for i, ch in enumerate(a, start=1):
        cost = (bb != ord(ch)).astype(np.int64)
        tmp = np.empty_like(prev)
        tmp[0] = i
        tmp[1:] = np.minimum(prev[1:] + 1, prev[:-1] + cost)
        prev = np.minimum.accumulate(tmp - idx) + idx
    return int(prev[-1])


if __name__ == "__main__":
    main()
