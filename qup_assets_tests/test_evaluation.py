"""Evaluation: Avg@k, pass@k and bootstrap CIs, and evaluate_model on a real tiny HF model."""

import numpy as np
import pandas as pd
import pytest

from qup_assets.evaluation.metrics import MACRO, bootstrap_ci, eval_table

from .helpers import synthetic_traces


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_more_problems():
    rng = np.random.default_rng(0)
    widths = []
    for n in (20, 80, 320):
        acc = rng.binomial(4, 0.4, size=n) / 4
        low, high = bootstrap_ci(acc, 2000, seed=1)
        assert low <= acc.mean() <= high
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]
    assert bootstrap_ci(acc, 500, seed=1) == bootstrap_ci(acc, 500, seed=1)


def test_eval_table_avg_at_k_pass_at_k_and_macro():
    samples = pd.DataFrame({
        "benchmark": ["a"] * 4 + ["b"] * 4,
        "problem_id": ["a1", "a1", "a2", "a2", "b1", "b1", "b2", "b2"],
        "correct": [True, False, False, False, True, True, True, False],
        "verdict": ["correct", "wrong", "no_answer", "wrong", "correct", "correct", "correct", "wrong"],
        "finish_reason": ["stop"] * 7 + ["length"],
        "n_tokens": [10] * 8,
    })
    t = eval_table(samples, k=2, bootstrap_samples=200, seed=0).set_index("benchmark")
    assert t.loc["a", "avg_at_k"] == 0.25 and t.loc["a", "pass_at_k"] == 0.5
    assert t.loc["b", "avg_at_k"] == 0.75 and t.loc["b", "pass_at_k"] == 1.0
    assert t.loc[MACRO, "avg_at_k"] == 0.5 and t.loc[MACRO, "n_problems"] == 4
    assert t.loc["a", "no_answer_rate"] == 0.25 and t.loc["b", "truncation_rate"] == 0.25
    assert (t["ci_low"] <= t["avg_at_k"]).all() and (t["avg_at_k"] <= t["ci_high"]).all()


def test_eval_repeats_exactly_with_the_same_seed(tiny_model_dir, tmp_path, verifier):
    from qup_assets.evaluation.evaluate import evaluate_model
    from qup_assets.study import Evaluation, Family

    _, problems, _, probs = synthetic_traces(12, seed=9)
    bench = pd.DataFrame({"problem_id": [f"b{i}" for i in range(12)], "problem": problems,
                          "answer": [p.answer for p in probs], "benchmark": ["x"] * 6 + ["y"] * 6})
    family = Family.model_validate({"student": {"kind": "hf", "model": str(tiny_model_dir)}})
    ev = Evaluation(k=3, temperature=1.0, max_tokens=96, seed=5, bootstrap_samples=300)
    runs = []
    for run in range(2):  # a fresh cache each time: the numbers come from sampling, not from a stored copy
        runs.append(evaluate_model("f", family, str(tiny_model_dir), bench, ev, tmp_path / f"cache{run}", verifier))
    (t0, p0, s0), (t1, p1, s1) = runs
    pd.testing.assert_frame_equal(t0, t1)
    pd.testing.assert_frame_equal(p0, p1)
    assert s0 == s1 == {"cache_hits": 0, "generated": 36}
    assert list(t0["benchmark"]) == ["x", "y", MACRO] and (t0["k"] == 3).all()
    assert p0["k"].eq(3).all() and len(p0) == 12
    # the macro row is the mean of the per-benchmark rows, which are the means of the per-problem accuracies
    by_bench = p0.groupby("benchmark")["accuracy"].mean()
    assert t0.set_index("benchmark").loc[["x", "y"], "avg_at_k"].tolist() == pytest.approx(by_bench.tolist())
    again = evaluate_model("f", family, str(tiny_model_dir), bench, ev, tmp_path / "cache0", verifier)
    assert again[2] == {"cache_hits": 36, "generated": 0}  # a re-run is served from the cache
    pd.testing.assert_frame_equal(again[0], t0)
