"""Verified sampling: N samples per problem, each verified against its gold answer (`sample_verified`: the
native pool and every evaluation), and the SLM-RFT ("native") traces: one correct trace kept per solvable problem."""

from __future__ import annotations

import re

import pandas as pd

from qup_assets.backends.base import ProgressFn, Request, SamplingParams
from qup_assets.backends.cache import ResponseCache, cached_sample
from qup_assets.common import stable_hash
from qup_assets.mathcore.extract import clean_text, last_boxed
from qup_assets.mathcore.verify import VerifierPool

SAMPLE_COLUMNS = [
    "model_family", "problem_id", "sample_idx", "completion", "extracted_answer", "verdict", "reason",
    "correct", "n_tokens", "finish_reason",
]
TRACE_COLUMNS = ["model_family", "problem_id", "prompt", "completion", "answer", "sample_idx", "correct", "n_tokens"]


def sample_verified(
    lm,
    cache: ResponseCache,
    family: str,
    problems: pd.DataFrame,
    prompts: list[str],
    n: int,
    params: SamplingParams,
    verifier: VerifierPool,
    progress: ProgressFn | None = None,
    label: str = "native samples",
) -> pd.DataFrame:
    """All N samples of every problem, verified; `prompts` is aligned with `problems` rows.

    Evaluation uses the same function: k samples per benchmark item through the same cache and verifier.
    """
    requests = [Request(prompt, i) for prompt in prompts for i in range(n)]
    comps = cached_sample(lm, cache, requests, params, progress=progress, label=f"{family} {label}")
    golds = [a for a in problems["answer"] for _ in range(n)]
    results = verifier.verify_many([(g, c.text) for g, c in zip(golds, comps)])
    return pd.DataFrame(
        {
            "model_family": family,
            "problem_id": [pid for pid in problems["problem_id"] for _ in range(n)],
            "sample_idx": [r.sample_idx for r in requests],
            "completion": [c.text for c in comps],
            "extracted_answer": [r.extracted for r in results],
            "verdict": [r.verdict for r in results],
            "reason": [r.reason for r in results],
            "correct": [r.correct for r in results],
            "n_tokens": [c.n_tokens for c in comps],
            "finish_reason": [c.finish_reason for c in comps],
        },
        columns=SAMPLE_COLUMNS,
    )


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_FINAL_LINE = re.compile(r"(\\boxed|\\fbox|answer is|final answer|^answer\s*:|^####)", re.IGNORECASE | re.MULTILINE)


def clean_trace(text: str) -> str:
    """Light cleaning of generation noise, never of content.

    1. invalid unicode replaced, CRLF -> LF, control characters dropped;
    2. trailing whitespace on each line and blank lines at both ends removed;
    3. anything after the line holding the final answer (\\boxed{}, "The answer is", "Answer:", "####")
       is dropped: text a model keeps generating after it has answered is not part of the solution.
    """
    text = _CONTROL.sub("", clean_text(text).replace("\r\n", "\n").replace("\r", "\n"))
    lines = [ln.rstrip() for ln in text.split("\n")]
    last = max((i for i, ln in enumerate(lines) if _FINAL_LINE.search(ln)), default=None)
    if last is not None and (last_boxed(lines[last]) is not None or "\\boxed" not in lines[last]):
        lines = lines[: last + 1]
    return "\n".join(lines).strip("\n").strip()


def clean_verified(completions, answers, verifier: VerifierPool) -> tuple[list[str], list[str], list]:
    """(kept, cleaned, checks): each completion cleaned (clean_trace) if the cleaned text still verifies against
    its answer, else raw; the cleaned texts and their verification results."""
    raw = list(completions)
    cleaned = [clean_trace(t) for t in raw]
    checks = verifier.verify_many(list(zip(answers, cleaned)))
    return [c if r.correct else t for c, r, t in zip(cleaned, checks, raw)], cleaned, checks


def select_traces(samples: pd.DataFrame, problems: pd.DataFrame, prompts: dict[str, str], seed: int,
                  verifier: VerifierPool) -> tuple[pd.DataFrame, dict]:
    """One correct trace per solvable problem, chosen by a seeded hash (not by position or length).

    A sample cut at max_tokens is never a trace, even when an answer it wrote before the cut verifies: the
    model had not stopped, and training on it would teach the student to run on (counted in the stats).
    A cleaned trace must still verify; if cleaning broke it, the raw completion is kept instead.
    """
    cut = samples["finish_reason"] == "length" if "finish_reason" in samples else False
    correct = samples[samples["correct"] & ~cut].copy()
    correct["rank"] = [stable_hash("pick", seed, p, int(i)) for p, i in zip(correct["problem_id"], correct["sample_idx"])]
    chosen = correct.sort_values(["problem_id", "rank"]).groupby("problem_id", sort=True).head(1)
    answers = problems.set_index("problem_id")["answer"]
    completions, cleaned, checks = clean_verified(chosen["completion"], [answers[p] for p in chosen["problem_id"]],
                                                  verifier)
    stats = {
        "cut_at_max_tokens": int((samples["correct"] & cut).sum()),
        "cleaned_changed": int(sum(c != raw for c, raw in zip(cleaned, chosen["completion"]))),
        "cleaning_reverted": int(sum(not r.correct for r in checks)),
    }
    traces = pd.DataFrame(
        {
            "model_family": chosen["model_family"].values,
            "problem_id": chosen["problem_id"].values,
            "prompt": [prompts[p] for p in chosen["problem_id"]],
            "completion": completions,
            "answer": [answers[p] for p in chosen["problem_id"]],
            "sample_idx": chosen["sample_idx"].values,
            "correct": True,
            "n_tokens": chosen["n_tokens"].values,
        },
        columns=TRACE_COLUMNS,
    )
    return traces.reset_index(drop=True), stats


def sampling_summary(samples: pd.DataFrame, n: int) -> dict:
    by_problem = samples.groupby("problem_id")["correct"]
    return {
        "pass@1": float(samples["correct"].mean()),
        f"pass@{n}": float(by_problem.any().mean()),
        "solvable_problems": int(by_problem.any().sum()),
        "problems": int(by_problem.ngroups),
        "samples": len(samples),
        "no_answer_rate": float((samples["verdict"] == "no_answer").mean()),
        "truncation_rate": float((samples["finish_reason"] == "length").mean()),
        "mean_tokens": float(samples["n_tokens"].mean()),
    }


def no_traces_message(family: str, samples: pd.DataFrame) -> str:
    """Why a family has no native trace, from its samples' verdicts: what the student wrote instead."""
    n = len(samples)
    verdicts = samples["verdict"].value_counts() if n else pd.Series(dtype=int)
    tally = ", ".join(f"{c} x {v}" for v, c in verdicts.items()) or "no samples"
    cut = float((samples["finish_reason"] == "length").mean()) if n and "finish_reason" in samples else 0.0
    if n and verdicts.get("no_answer", 0) >= n / 2:
        hint = ("most samples give no final answer: check that the family's prompt asks for \\boxed{} (prompt.template "
                f"and its chat template) and that sampling.max_tokens leaves room for it ({cut:.0%} were cut off)")
    else:
        hint = "the student is too weak for this pool: pretrain it longer, or draw more samples (sampling.n)"
    ok = int(samples["correct"].sum()) if n else 0
    return f"native_samples[{family}]: {ok} of {n} samples verified correct ({tally}), so no native trace; {hint}"
