"""Avg@k, pass@k and bootstrap confidence intervals over problems.

Avg@k is the mean accuracy over the k samples of a problem, then over problems (the paper's Avg@16).
The interval resamples problems, not samples: the question is how much the number would move on
another draw of benchmark items of the same kind. The macro average resamples within each benchmark.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

EVAL_COLUMNS = [
    "model_family", "objective", "lr", "batch_size", "benchmark", "k", "avg_at_k", "ci_low", "ci_high",
    "pass_at_k", "n_problems", "no_answer_rate", "truncation_rate", "mean_tokens",
]
MACRO = "macro"


def per_problem(samples: pd.DataFrame) -> pd.DataFrame:
    """One row per (benchmark, problem): the share of its k samples that are correct, and whether any is."""
    g = samples.groupby(["benchmark", "problem_id"], sort=True)["correct"]
    return pd.DataFrame({"accuracy": g.mean(), "any_correct": g.any(), "k": g.size()}).reset_index()


def bootstrap_ci(values: np.ndarray, samples: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean of `values` under resampling with replacement."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(samples, len(values)))].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def macro_bootstrap_ci(groups: list[np.ndarray], samples: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Interval of the mean over benchmarks of each benchmark's mean, resampling within each benchmark."""
    groups = [np.asarray(g, dtype=float) for g in groups if len(g)]
    if not groups:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.mean([g[rng.integers(0, len(g), size=(samples, len(g)))].mean(axis=1) for g in groups], axis=0)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def eval_table(samples: pd.DataFrame, k: int, bootstrap_samples: int, seed: int) -> pd.DataFrame:
    """Per-benchmark rows plus a macro row, from verified samples with columns
    benchmark, problem_id, correct, verdict, finish_reason, n_tokens."""
    probs = per_problem(samples)
    rows = []
    for bench, g in probs.groupby("benchmark", sort=True):
        s = samples[samples["benchmark"] == bench]
        low, high = bootstrap_ci(g["accuracy"].to_numpy(), bootstrap_samples, seed)
        rows.append({
            "benchmark": bench, "k": k, "avg_at_k": float(g["accuracy"].mean()), "ci_low": low, "ci_high": high,
            "pass_at_k": float(g["any_correct"].mean()), "n_problems": len(g),
            "no_answer_rate": float((s["verdict"] == "no_answer").mean()),
            "truncation_rate": float((s["finish_reason"] == "length").mean()),
            "mean_tokens": float(s["n_tokens"].mean()),
        })
    if rows:
        by_bench = [g["accuracy"].to_numpy() for _, g in probs.groupby("benchmark", sort=True)]
        low, high = macro_bootstrap_ci(by_bench, bootstrap_samples, seed)
        table = pd.DataFrame(rows)
        rows.append({
            "benchmark": MACRO, "k": k, "avg_at_k": float(table["avg_at_k"].mean()), "ci_low": low, "ci_high": high,
            "pass_at_k": float(table["pass_at_k"].mean()), "n_problems": int(table["n_problems"].sum()),
            "no_answer_rate": float(table["no_answer_rate"].mean()),
            "truncation_rate": float(table["truncation_rate"].mean()),
            "mean_tokens": float(table["mean_tokens"].mean()),
        })
    return pd.DataFrame(rows)
