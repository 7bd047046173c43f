"""The pipeline's own overhead for one paper-scale family: everything that is not a model call.

100K problems x N=8 completions of ~1,000 characters from a backend that answers instantly (the synthetic
student's style after a restated problem, half of them wrong), through the same functions the assets call: the response cache, the
hardened verifier, trace selection and cleaning, the variants' similarity columns (4 rewrites per trace),
the Parquet tables, and the report's aligned per-problem arrays. Each stage prints its wall time and the
process's peak memory so far; the total is compared with the H100 hours `qup plan` projects for a 1.5B
family, the ratio the issue asks to keep under 10%. Answers here are the synthetic world's integers
(math-verify's fast path); a LaTeX-answer sample gives the rate for real benchmarks' answers.

Run: make bench   (or .venv/bin/python bench/bench_scale.py [--problems 100000 --n 8])
"""

import argparse
import random
import resource
import shutil
import tempfile
import time
from pathlib import Path


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class InstantLM:
    """A backend that answers at once: each prompt's completion is precomputed (the student's style)."""

    def __init__(self, answers: dict[str, str]):
        self.answers, self.fingerprint, self.prompts_per_call = answers, "instant", 4096

    def sample(self, requests, params, progress=None):
        from qup_assets.backends.base import Completion

        return [Completion(text=self.answers[(r.prompt, r.sample_idx)], n_tokens=380, finish_reason="stop")
                for r in requests]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=100_000)
    ap.add_argument("--n", type=int, default=8)
    args = ap.parse_args()

    import pandas as pd

    from qup_assets.adaptation.similarity import normalized_edit_distance, semantic_preservation
    from qup_assets.backends.base import SamplingParams
    from qup_assets.backends.cache import ResponseCache
    from qup_assets.common import problem_id
    from qup_assets.mathcore.verify import VerifierPool
    from qup_assets.plan import gpu_hours
    from qup_assets.report.analysis import family_data
    from qup_assets.sampling.native import sample_verified, select_traces
    from qup_assets.study import load_study
    from qup_assets.variants import names as variant_names
    from qup_assets.world.generator import generate
    from qup_assets.world.styles import STYLES

    tmp = Path(tempfile.mkdtemp())
    stages: list[tuple[str, float]] = []

    def stage(name, t0):
        stages.append((name, time.perf_counter() - t0))
        print(f"  {name:52s} {stages[-1][1]:8.1f} s   peak {peak_mb():7.0f} MB", flush=True)

    print(f"\npipeline overhead for one family: {args.problems:,} problems x N={args.n}, instant backend, "
          f"2 verifier workers")
    t = time.perf_counter()
    world = generate(args.problems, seed=11)
    rng = random.Random(0)
    problems = pd.DataFrame({"problem_id": [problem_id(p.problem) for p in world], "problem": [p.problem for p in world],
                             "answer": [p.answer for p in world]})
    problems = problems.drop_duplicates("problem_id").reset_index(drop=True)
    prompts = [f"<|im_start|>user\n{p}<|im_end|>\n<|im_start|>assistant\n" for p in problems["problem"]]
    by_id = {p: w for p, w in zip((problem_id(w.problem) for w in world), world)}
    answers = {}
    for prompt, pid in zip(prompts, problems["problem_id"]):
        w = by_id[pid]
        # real traces restate and reason before the steps: pad to a paper-like length (~1,500 characters)
        right = (f"We read the problem carefully. {w.problem}\nLet us work it out one step at a time.\n" * 3
                 + STYLES["qwen"].render(w.program, w.items))
        for i in range(args.n):
            answers[(prompt, i)] = right if rng.random() < 0.5 else right.replace(f"{{{w.answer}}}", f"{{{w.program.answer + 1}}}")
    stage(f"problems and {len(answers):,} completions made (not timed work)", t)
    stages.pop()
    print(f"  completions: {sum(map(len, answers.values())) / len(answers):.0f} characters on average; the peak "
          "memory below includes them (the instant backend holds all of them)")

    params = SamplingParams(temperature=1.0, max_tokens=4096, seed=0)
    with VerifierPool(workers=2) as verifier:
        t = time.perf_counter()
        with ResponseCache(tmp / "cache", "ns") as cache:
            samples = sample_verified(InstantLM(answers), cache, "fam", problems, prompts, args.n, params, verifier)
        stage("sampling through the cache + verification (cold)", t)
        t = time.perf_counter()
        with ResponseCache(tmp / "cache", "ns") as cache:
            sample_verified(InstantLM({}), cache, "fam", problems, prompts, args.n, params, verifier)
        stage("the same, resumed: every response from the cache", t)
        t = time.perf_counter()
        traces, _ = select_traces(samples, problems, dict(zip(problems["problem_id"], prompts)), 0, verifier)
        stage(f"trace selection + cleaning + re-verification ({len(traces):,} traces)", t)

        latex = [("\\frac{3}{4}", "so the answer is $\\boxed{\\dfrac{6}{8}}$"), ("2\\sqrt{2}", "$\\boxed{\\sqrt{8}}$"),
                 ("x^2-1", "$\\boxed{(x-1)(x+1)}$"), ("\\frac{\\pi}{3}", "$\\boxed{60^\\circ}$")] * 500
        t0 = time.perf_counter()
        verifier.verify_many(latex)
        latex_rate = len(latex) / (time.perf_counter() - t0)

    t = time.perf_counter()
    native = list(traces["completion"])
    sims = []
    for v in range(4):  # oracle_refined, oracle_synthesized, style_aligned, reference: one rewrite per trace
        rewrites = [c.replace("Step", "Stage") if v % 2 else c.upper() for c in native]
        sims.append(pd.DataFrame({"semantic_preservation": [semantic_preservation(a, b) for a, b in zip(native, rewrites)],
                                  "edit_distance": [normalized_edit_distance(a, b) for a, b in zip(native, rewrites)]}))
    stage(f"variants' similarity columns (4 x {len(native):,} pairs)", t)

    t = time.perf_counter()
    samples.to_parquet(tmp / "native_samples.parquet")
    traces.to_parquet(tmp / "native_traces.parquet")
    for i, s in enumerate(sims):
        s.to_parquet(tmp / f"variant{i}.parquet")
    pd.read_parquet(tmp / "native_samples.parquet")
    stage(f"tables written and read back ({len(samples):,} sample rows)", t)

    t = time.perf_counter()
    ids = list(traces["problem_id"])
    rewards = {v: pd.DataFrame({"model_family": "fam", "problem_id": ids, "score": [rng.random() for _ in ids]})
               for v in variant_names()}
    adaptation = {v: pd.DataFrame({"model_family": "fam", "problem_id": ids, "nll": 1.0, "n_tokens": 380})
                  for v in variant_names()}
    items = [f"b{i}" for i in range(1517)]
    per_problem = {v: pd.DataFrame({"model_family": "fam", "objective": "sft", "lr": 5e-5, "batch_size": 256,
                                    "benchmark": "math", "problem_id": items, "accuracy": 0.5}) for v in variant_names()}
    assert family_data("fam", rewards, adaptation, per_problem, ["sft"], 5e-5, 256) is not None
    stage("report: aligned per-problem arrays", t)
    shutil.rmtree(tmp, ignore_errors=True)

    total = sum(s for _, s in stages)
    study = load_study("paper")
    gpu = sum(h for h in [
        gpu_hours(args.n * args.problems * study.sampling.max_tokens, "generate", 1.5e9),
        gpu_hours(5 * args.problems * study.sampling.max_tokens, "score", 1.5e9)] if h) * 3600
    print(f"  {'total':52s} {total:8.1f} s   peak {peak_mb():7.0f} MB")
    print(f"  against the H100 time qup plan projects for sampling + scoring one 1.5B family ({gpu / 3600:,.0f} h): "
          f"{100 * total / gpu:.3f}%")
    print(f"  LaTeX answers verify at {latex_rate:,.0f} pairs/s here: {args.n * args.problems:,} of them would take "
          f"{args.n * args.problems / latex_rate / 60:,.0f} min on these 2 cores")


if __name__ == "__main__":
    main()
