"""Verified pairs per second: qup's hardened VerifierPool vs calling math-verify directly in one process.

Two workloads, each measured against the baseline in the same run:
  integers  - the synthetic world's answers (decided by the exact fast path, no parsing)
  latex     - fractions, roots and expressions that need math-verify's parser
Then the guarantees the tests check without timing them: answer extraction on 10,000 nested braces
against a flat box of the same length (linear: ratio near 1), and the time to a verdict for each bomb
against the pool's timeout (a bomb must never hold a caller longer than the timeout plus a restart).
Last, the conformance suite (qup_assets_tests/fixtures/conformance: Math-Verify's own labelled pairs, also
written in the minerva_math and Qwen2.5-Math formats): agreement with the labels, qup's pipeline path
beside math-verify called directly, for each answer-format setting.
Run: make bench   (or .venv/bin/python bench/bench_verify.py [--n 400])
"""

import argparse
import random
import time

from math_verify import LatexExtractionConfig, parse, verify

from qup_assets.mathcore.extract import last_boxed
from qup_assets.mathcore.verify import VerifierPool

BOMBS = {
    "power tower": "\\boxed{9^9^9^9}",
    "factorial": "\\boxed{100000!}",
    "million digits": "\\boxed{" + "7" * 1_000_000 + "}",
    "nesting": "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}",
    "huge product": "\\boxed{" + "*".join(["99999999"] * 40) + "}",
}


def bench_guarantees(timeout: float = 2.0):
    n = 10_000
    deep, flat = "\\boxed{" + "{" * n + "1" + "}" * n + "}", "\\boxed{" + "x" * (2 * n + 1) + "}"
    times = {}
    for name, text in (("deep", deep), ("flat", flat)):
        t = time.perf_counter()
        for _ in range(20):
            last_boxed(text)
        times[name] = (time.perf_counter() - t) / 20
    print(f"  extraction, 10,000 nested braces {times['deep'] * 1e3:.2f} ms | flat box of the same length "
          f"{times['flat'] * 1e3:.2f} ms | ratio {times['deep'] / times['flat']:.2f}x")
    with VerifierPool(workers=1, timeout=timeout, max_answer_chars=4096) as pool:
        pool.verify("1", "\\boxed{1}")
        for name, bomb in BOMBS.items():
            t = time.perf_counter()
            res = pool.verify("3", bomb)
            took = time.perf_counter() - t
            print(f"  bomb {name:15s} verdict {res.verdict:9s} in {took:6.3f} s | {took / timeout:5.2f}x the {timeout:g} s timeout")


def workloads(n: int, seed: int = 0):
    rng = random.Random(seed)
    ints = []
    for _ in range(n):
        g = rng.randint(0, 10_000)
        p = g if rng.random() < 0.6 else g + rng.randint(1, 9)
        ints.append((str(g), f"... so the total is \\boxed{{{p}}}."))
    latex = []
    for _ in range(n):
        a, b = rng.randint(1, 40), rng.randint(2, 40)
        forms = [
            (f"\\frac{{{a}}}{{{b}}}", f"The answer is $\\frac{{{2 * a}}}{{{2 * b}}}$."),
            (f"{a}\\sqrt{{{b}}}", f"\\boxed{{\\sqrt{{{a * a * b}}}}}"),
            (f"{a}x+{b}", f"\\boxed{{{b}+{a}x}}"),
            (f"\\frac{{{a}}}{{{b}}}", f"\\boxed{{{a / b:.6f}}}"),
        ]
        latex.append(rng.choice(forms))
    return {"integers": ints, "latex": latex}


def baseline(pairs):
    """What a user would write: math-verify parse + verify on the full text, in this process."""
    cfg = [LatexExtractionConfig()]
    ok = 0
    for gold, pred in pairs:
        ok += bool(verify(parse(f"${gold}$", extraction_config=cfg), parse(pred, extraction_config=cfg)))
    return ok


def bench_conformance():
    from qup_assets_tests.conformance import agreement, direct_verdicts, load_cases, qup_verdicts, scopes

    cases = load_cases()
    direct = direct_verdicts(cases)
    for formats, idx in scopes(cases).items():
        scoped = [cases[i] for i in idx]
        ours = agreement(scoped, qup_verdicts(scoped, formats))
        theirs = agreement(scoped, [direct[i] for i in idx])
        print(f"  conformance ({formats:9s} on {len(scoped)} pairs) qup {ours} | math-verify direct {theirs}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    print(f"verification throughput, n={args.n} pairs per workload, {args.workers} workers")
    with VerifierPool(workers=args.workers, timeout=5.0) as pool:
        pool.verify_many([("\\frac{1}{2}", "\\boxed{0.5}")] * args.workers)  # start workers outside the timing
        for name, pairs in workloads(args.n).items():
            t = time.perf_counter()
            base_ok = baseline(pairs)
            t_base = time.perf_counter() - t
            t = time.perf_counter()
            results = pool.verify_many(pairs)
            t_qup = time.perf_counter() - t
            qup_ok = sum(r.correct for r in results)
            print(
                f"  {name:9s} math-verify direct {len(pairs) / t_base:8.0f} pairs/s | qup pool {len(pairs) / t_qup:8.0f} pairs/s"
                f" | ratio {t_base / t_qup:5.2f}x | agree on correct: {base_ok} vs {qup_ok}"
            )
    bench_guarantees()
    bench_conformance()


if __name__ == "__main__":
    main()
