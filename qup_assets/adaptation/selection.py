"""Choosing data by the learner: per problem, the verified candidate trace the student finds least surprising.

The paper's suggested direction ("optimise learner-data compatibility beyond reward scores") as a variant that
costs no generation: the candidates are what the study already has (the student's own correct samples and the
Oracle variants' verified traces), scored once under the student through the log-prob cache, so the adaptation
asset later reads the chosen trace's log-probs from the same cache.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from qup_assets.adaptation.perplexity import cached_logprobs
from qup_assets.adaptation.similarity import normalized_edit_distance, semantic_preservation
from qup_assets.backends.base import ProgressFn
from qup_assets.backends.cache import ResponseCache
from qup_assets.common import stable_hash
from qup_assets.mathcore.verify import VerifierPool
from qup_assets.sampling.native import clean_verified
from qup_assets.variants import VARIANT_COLUMNS

SELECTED_COLUMNS = [*VARIANT_COLUMNS, "selected_from", "candidates", "nll_per_token", "native_nll_per_token"]


def student_candidates(native: pd.DataFrame, samples: pd.DataFrame, verifier: VerifierPool) -> pd.DataFrame:
    """The student's verified-correct samples of the native traces' problems, cleaned as native traces are (a
    cleaned sample that no longer verifies is kept raw); the native trace itself under its own name."""
    chosen = dict(zip(native["problem_id"], native["sample_idx"]))
    ok = samples[samples["correct"] & samples["problem_id"].isin(chosen)]
    ok = ok[[chosen[p] != i for p, i in zip(ok["problem_id"], ok["sample_idx"])]]
    answers = dict(zip(native["problem_id"], native["answer"]))
    completions, _, _ = clean_verified(ok["completion"], [answers[p] for p in ok["problem_id"]], verifier)
    others = pd.DataFrame({"problem_id": ok["problem_id"].values, "completion": completions,
                           "selected_from": [f"student sample {int(i)}" for i in ok["sample_idx"]]})
    own = pd.DataFrame({"problem_id": native["problem_id"].values, "completion": native["completion"].values,
                        "selected_from": "native"})
    return pd.concat([own, others], ignore_index=True)


def variant_candidates(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The verified traces of other variants (failures are no candidates), named by their variant."""
    frames = [df.loc[df["correct"].astype(bool), ["problem_id", "completion"]].assign(selected_from=v)
              for v, df in tables.items()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["problem_id", "completion",
                                                                                      "selected_from"])


def select_lowest_nll(lm, cache_dir: Path, family: str, native: pd.DataFrame, candidates: pd.DataFrame,
                      progress: ProgressFn | None = None) -> pd.DataFrame:
    """One row per native trace (its problem id and prompt): the candidate with the lowest per-token NLL under
    `lm`, ties broken by a stable hash; identical texts are scored once. SELECTED_COLUMNS."""
    prompts = dict(zip(native["problem_id"], native["prompt"]))
    cands = candidates[candidates["problem_id"].isin(prompts)].drop_duplicates(["problem_id", "completion"])
    cands = cands.reset_index(drop=True)
    with ResponseCache(cache_dir, lm.fingerprint[:16]) as cache:
        scored = cached_logprobs(lm, cache, [prompts[p] for p in cands["problem_id"]], list(cands["completion"]),
                                 progress=progress)
    cands["nll_per_token"] = [-float(np.mean(t.logprobs)) if t.logprobs else float("inf") for t in scored]
    cands["tie"] = [stable_hash("compat", p, c) for p, c in zip(cands["problem_id"], cands["completion"])]
    n_cands = cands.groupby("problem_id").size()
    native_nll = cands[cands["selected_from"] == "native"].set_index("problem_id")["nll_per_token"]
    best = cands.sort_values(["problem_id", "nll_per_token", "tie"]).groupby("problem_id").head(1).set_index("problem_id")
    best = best.reindex(native["problem_id"])
    comps = list(best["completion"])
    return pd.DataFrame({
        "model_family": family,
        "problem_id": native["problem_id"].values,
        "prompt": native["prompt"].values,
        "completion": comps,
        "correct": True,
        "oracle": "selected by the student's per-token NLL",
        "attempts": 1,
        "reason": "",
        "repaired_steps": 0,
        "semantic_preservation": [semantic_preservation(n, c) for n, c in zip(native["completion"], comps)],
        "semantic_judge": None,
        "edit_distance": [normalized_edit_distance(n, c) for n, c in zip(native["completion"], comps)],
        "n_chars": [len(c) for c in comps],
        "selected_from": best["selected_from"].values,
        "candidates": n_cands.reindex(native["problem_id"]).to_numpy(dtype=int),
        "nll_per_token": best["nll_per_token"].values,
        "native_nll_per_token": native_nll.reindex(native["problem_id"]).values,
    }, columns=SELECTED_COLUMNS)
