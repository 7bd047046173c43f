"""Evaluate one model folder on the benchmarks: k verified samples per item, then the Avg@k table.

Plain Python (no Dagster): the eval assets call it, and tests call the same function.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from qup_assets.backends.base import SamplingParams
from qup_assets.backends.cache import ResponseCache
from qup_assets.backends.context import check_prompt_tokens
from qup_assets.backends.factory import load_tokenizer, open_backend
from qup_assets.backends.prompting import render_prompt
from qup_assets.evaluation.metrics import eval_table, per_problem
from qup_assets.sampling.native import sample_verified
from qup_assets.study import Evaluation, Family


def evaluate_model(family_name: str, family: Family, model_path: str, benchmarks: pd.DataFrame, ev: Evaluation,
                   cache_dir: Path, verifier, label: str = "", log: Callable[[str], None] = print,
                   max_prompt_tokens: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(summary rows, per-problem rows, cache stats) for one model; raises BackendError if it cannot open or a
    prompt is longer than max_prompt_tokens (checked before the engine opens)."""
    tok = load_tokenizer(model_path, family.trust_remote_code)
    prompts = [render_prompt(tok, family.prompt, p) for p in benchmarks["problem"]]
    if max_prompt_tokens:
        check_prompt_tokens(tok, prompts, list(benchmarks["problem_id"]), max_prompt_tokens, "benchmark")
    lm = open_backend(family, model_path, seed=ev.seed)
    params = SamplingParams(temperature=ev.temperature, top_p=ev.top_p, max_tokens=ev.max_tokens, seed=ev.seed)
    with ResponseCache(cache_dir, lm.fingerprint[:16]) as cache:
        samples = sample_verified(lm, cache, family_name, benchmarks, prompts, ev.k, params, verifier,
                                progress=log, label=f"{label} eval")
        stats = {"cache_hits": cache.hits, "generated": cache.misses}
    samples["benchmark"] = [b for b in benchmarks["benchmark"] for _ in range(ev.k)]
    return eval_table(samples, ev.k, ev.bootstrap_samples, ev.seed), per_problem(samples), stats
