"""Does a reward model tell right from wrong? Measured on the family's own native samples.

A reward is only evidence of quality if the RM separates correct solutions from wrong ones written by
the same student: P(a correct sample outscores a wrong one), the ROC AUC (Mann-Whitney), with a
bootstrap CI that resamples both sides. Below `WEAK_SEPARATION` an RM's "perceived quality" says little
about correctness, and the report says so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

WEAK_SEPARATION = 0.6
DIAGNOSTIC_COLUMNS = ["model_family", "reward_model", "n_correct", "n_wrong", "p_correct_over_wrong", "ci_low",
                      "ci_high", "mean_correct", "mean_wrong", "sd_correct", "sd_wrong", "warning"]


def diagnostic_samples(samples: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """Up to `n` correct and `n` wrong native samples, one of each kind per problem where it can: wrong means
    verified wrong after a normal stop (a cut-off sample is no judgement of the RM's). Column `correct`."""
    usable = samples[samples["correct"] | ((samples["verdict"] == "wrong") & (samples["finish_reason"] == "stop"))]
    picked = []
    for ok in (True, False):
        side = usable[usable["correct"] == ok].sample(frac=1.0, random_state=seed)
        first = side.drop_duplicates("problem_id")
        rest = side.drop(first.index)
        picked.append(pd.concat([first, rest]).head(n))
    return pd.concat(picked, ignore_index=True)


def auc(correct: np.ndarray, wrong: np.ndarray) -> float:
    """P(correct > wrong) + P(tie) / 2 over all pairs, from ranks (O(n log n))."""
    if not len(correct) or not len(wrong):
        return float("nan")
    both = np.concatenate([correct, wrong])
    ranks = pd.Series(both).rank(method="average").to_numpy()
    n_c = len(correct)
    return float((ranks[:n_c].sum() - n_c * (n_c + 1) / 2) / (n_c * len(wrong)))


def separation(correct, wrong, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """AUC and its 95% percentile bootstrap CI (both sides resampled)."""
    c, w = np.asarray(correct, float), np.asarray(wrong, float)
    point = auc(c, w)
    if not len(c) or not len(w):
        return point, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    boots = [auc(rng.choice(c, len(c)), rng.choice(w, len(w))) for _ in range(n_boot)]
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return point, float(lo), float(hi)


def diagnose(family: str, reward_model: str, scores: pd.Series, correct: pd.Series, n_boot: int, seed: int) -> dict:
    c, w = scores[correct.values].to_numpy(), scores[~correct.values].to_numpy()
    p, lo, hi = separation(c, w, n_boot, seed)
    warning = ""
    if not len(c) or not len(w):
        warning = f"not measurable: {len(c)} correct and {len(w)} wrong native samples"
    elif p < WEAK_SEPARATION:
        warning = (f"{reward_model} cannot tell this family's correct samples from its wrong ones "
                   f"(P = {p:.2f} < {WEAK_SEPARATION}): its scores say little about correctness")
    return {"model_family": family, "reward_model": reward_model, "n_correct": len(c), "n_wrong": len(w),
            "p_correct_over_wrong": p, "ci_low": lo, "ci_high": hi,
            "mean_correct": float(c.mean()) if len(c) else float("nan"),
            "mean_wrong": float(w.mean()) if len(w) else float("nan"),
            "sd_correct": float(c.std(ddof=1)) if len(c) > 1 else float("nan"),
            "sd_wrong": float(w.std(ddof=1)) if len(w) > 1 else float("nan"), "warning": warning}
