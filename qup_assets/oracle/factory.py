"""Open the Oracle a variant is made by: the study's Oracle (symbolic or an LLM behind any backend) for the
Oracle variants, the dataset's reference solutions for the reference variant."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pandas as pd

from qup_assets.backends.cache import ResponseCache
from qup_assets.backends.factory import load_tokenizer, open_lm
from qup_assets.backends.hub import resolve_model
from qup_assets.oracle.base import OracleItem
from qup_assets.oracle.llm import LLMOracle
from qup_assets.oracle.reference import ReferenceOracle
from qup_assets.oracle.symbolic import SymbolicOracle
from qup_assets.study import Family, Study
from qup_assets.variants import Variant


def oracle_items(native: pd.DataFrame, pool: pd.DataFrame) -> list[OracleItem]:
    """One item per native trace: its problem, gold answer, the trace and (synthetic world) the problem's program."""
    p = pool.set_index("problem_id")
    has_program = "program" in p.columns
    return [
        OracleItem(pid, p.at[pid, "problem"], ans, comp,
                   p.at[pid, "program"] if has_program and pd.notna(p.at[pid, "program"]) else None)
        for pid, ans, comp in zip(native["problem_id"], native["answer"], native["completion"])
    ]


def open_study_oracle(study: Study, family: Family, verifier, cache_dir: Path, stack: contextlib.ExitStack):
    """The study's Oracle; an LLM Oracle's response cache is entered on `stack` (closed with it). Raises
    BackendError when its model or server cannot be reached."""
    o = study.oracle
    if o.kind == "symbolic":
        style = family.student.style if family.student.kind == "synthetic" else None
        return SymbolicOracle(verifier, student_style=style)
    chat = None
    if o.backend.kind == "openai":
        lm = open_lm(o.backend, o.model)
    else:
        path = resolve_model(o.model)
        lm = open_lm(o.backend, path, seed=study.sampling.seed)
        tok = load_tokenizer(path)
        if tok.chat_template:
            def chat(text: str) -> str:
                return tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                               add_generation_prompt=True)
    cache = stack.enter_context(ResponseCache(cache_dir, lm.fingerprint[:16]))
    return LLMOracle(lm, cache, verifier, o.model, temperature=o.temperature, max_tokens=o.max_tokens,
                     max_retries=o.max_retries, seed=study.sampling.seed, chat_format=chat)


def open_variant_oracle(variant: Variant, study: Study, family: Family, pool: pd.DataFrame, verifier,
                        cache_dir: Path, stack: contextlib.ExitStack):
    """What writes a variant's traces: the dataset for `source: dataset`, the study's Oracle otherwise."""
    if variant.source == "dataset":
        return ReferenceOracle(pool.set_index("problem_id")["reference_solution"], verifier)
    return open_study_oracle(study, family, verifier, cache_dir, stack)
