"""Adaptation cost: how surprising each trace is to the family's base model.

Per trace: total NLL of the completion tokens, token count, perplexity, and perplexity
per quartile of the completion's tokens (Q1..Q4: the trace split into four contiguous
parts of near-equal token counts). Per dataset: the token-weighted global perplexity,
and which tokens carry the loss (the paper's " \\" vs "\\(" analysis).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from qup_assets.backends.base import ProgressFn, TokenLogprobs
from qup_assets.backends.cache import ResponseCache, cached_chunks
from qup_assets.common import stable_hash

QUARTILES = ("q1", "q2", "q3", "q4")


def cached_logprobs(lm, cache: ResponseCache, prompts: Sequence[str], completions: Sequence[str],
                    chunk_size: int = 64, progress: ProgressFn | None = None) -> list[TokenLogprobs]:
    """Token log-probs through the response cache (key: model fingerprint, prompt, completion)."""
    keys = [stable_hash("logprobs", lm.fingerprint, p, c) for p, c in zip(prompts, completions)]
    return cached_chunks(cache, keys, lambda idx: lm.logprobs([prompts[i] for i in idx], [completions[i] for i in idx]),
                         encode=lambda t: t.__dict__, decode=lambda h: TokenLogprobs(**h), chunk_size=chunk_size,
                         progress=progress, label="log-probs", per_call=getattr(lm, "prompts_per_call", None))


def quartile_ppl(logprobs: Sequence[float]) -> list[float]:
    """Perplexity of each quarter of the tokens (np.array_split: the first parts get the extra tokens)."""
    parts = np.array_split(np.asarray(logprobs, dtype=float), 4)
    return [math.exp(-p.mean()) if len(p) else float("nan") for p in parts]


def trace_metrics(t: TokenLogprobs) -> dict:
    n = len(t.logprobs)
    nll = -float(sum(t.logprobs))
    q = quartile_ppl(t.logprobs)
    return {"nll": nll, "n_tokens": n, "ppl": math.exp(nll / n) if n else float("nan"),
            **{f"ppl_{k}": v for k, v in zip(QUARTILES, q)}}


def global_ppl(df: pd.DataFrame) -> float:
    """Token-weighted: exp(total NLL / total tokens), so long traces count per token, not per trace."""
    tokens = df["n_tokens"].sum()
    return math.exp(df["nll"].sum() / tokens) if tokens else float("nan")


def quartile_global(df: pd.DataFrame, scored: Sequence[TokenLogprobs]) -> dict:
    sums = np.zeros(4)
    counts = np.zeros(4)
    for t in scored:
        for k, part in enumerate(np.array_split(np.asarray(t.logprobs, dtype=float), 4)):
            sums[k] -= part.sum()
            counts[k] += len(part)
    return {f"ppl_{q}": math.exp(s / c) if c else float("nan") for q, s, c in zip(QUARTILES, sums, counts)}


def loss_by_token(scored: Sequence[TokenLogprobs]) -> pd.DataFrame:
    """Per token string: occurrences, total NLL and its share of the dataset's total NLL."""
    total = defaultdict(float)
    count = defaultdict(int)
    for t in scored:
        for tok, lp in zip(t.tokens, t.logprobs):
            total[tok] -= lp
            count[tok] += 1
    df = pd.DataFrame({"token": list(total), "count": [count[k] for k in total], "nll": list(total.values())})
    df["share"] = df["nll"] / df["nll"].sum() if len(df) else 0.0
    df["mean_nll"] = df["nll"] / df["count"]
    return df.sort_values("share", ascending=False).reset_index(drop=True)


def attribution_table(variant: pd.DataFrame, native: pd.DataFrame, top: int = 12) -> pd.DataFrame:
    """The tokens carrying the largest share of this variant's loss, beside their share under native."""
    merged = variant.head(top).merge(native[["token", "share", "mean_nll"]], on="token", how="left",
                                     suffixes=("", "_native"))
    merged["token"] = merged["token"].map(repr)
    return merged[["token", "count", "share", "share_native", "mean_nll", "mean_nll_native"]].fillna(0.0)


TRACE_METRICS = ["nll", "n_tokens", "ppl", "ppl_q1", "ppl_q2", "ppl_q3", "ppl_q4"]  # trace_metrics' keys
# tokens / token_nll: each completion token's text and loss, what the report highlights (the tokens carrying the loss)
ADAPTATION_COLUMNS = ["model_family", "problem_id", *TRACE_METRICS, "semantic_preservation", "edit_distance",
                      "tokens", "token_nll"]


@dataclass
class Adaptation:
    table: pd.DataFrame  # ADAPTATION_COLUMNS, one row per trace of the common set
    scored: list[TokenLogprobs]  # the variant's token log-probs
    native_scored: list[TokenLogprobs]  # the native traces' on the same problems (the attribution baseline)
    cache_hits: int
    scored_now: int


def adaptation_cost(lm, cache_dir: Path, family: str, traces: pd.DataFrame, native: pd.DataFrame | None,
                    progress: ProgressFn | None = None) -> Adaptation:
    """Per-trace NLL, tokens, PPL and quartile PPLs of `traces` (prompt, completion) under `lm`, with semantic
    preservation and edit distance from the variant table; `native` None: the traces are the native ones."""
    with ResponseCache(cache_dir, lm.fingerprint[:16]) as cache:
        scored = cached_logprobs(lm, cache, list(traces["prompt"]), list(traces["completion"]), progress=progress)
        native_scored = scored if native is None else cached_logprobs(
            lm, cache, list(native["prompt"]), list(native["completion"]))
        hits, misses = cache.hits, cache.misses
    rows = pd.DataFrame([trace_metrics(t) for t in scored], columns=TRACE_METRICS)
    df = pd.concat([pd.DataFrame({"model_family": family, "problem_id": traces["problem_id"].values}), rows], axis=1)
    df["tokens"] = [list(t.tokens) for t in scored]
    df["token_nll"] = [[-float(lp) for lp in t.logprobs] for t in scored]
    if native is None:
        df["semantic_preservation"], df["edit_distance"] = 1.0, 0.0
    else:
        df["semantic_preservation"] = traces["semantic_preservation"].values
        df["edit_distance"] = traces["edit_distance"].values
    return Adaptation(df[ADAPTATION_COLUMNS], scored, native_scored, hits, misses)
