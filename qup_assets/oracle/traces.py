"""A variant's trace table: what its writer (the Oracle or the dataset) produced for each native trace's problem,
verified, with its distance to the native trace. Failures stay as rows with their reason, never dropped."""

from __future__ import annotations

import re
from collections import Counter

import pandas as pd

from qup_assets.adaptation.similarity import normalized_edit_distance, semantic_preservation
from qup_assets.oracle.base import OracleItem, OracleResult
from qup_assets.oracle.llm import PROMPT_VERSIONS, LLMOracle
from qup_assets.study import Oracle as OracleSettings
from qup_assets.variants import VARIANT_COLUMNS, Variant


def variant_frame(family: str, native: pd.DataFrame, results: list[OracleResult], oracle: str,
                  judged: list | None = None) -> pd.DataFrame:
    """One row per native trace (same problem ids and prompts), in its order."""
    comps = [r.completion if r.ok else None for r in results]
    return pd.DataFrame(
        {
            "model_family": family,
            "problem_id": native["problem_id"].values,
            "prompt": native["prompt"].values,
            "completion": comps,
            "correct": [r.ok for r in results],
            "oracle": oracle,
            "attempts": [r.attempts for r in results],
            "reason": [r.reason for r in results],
            "repaired_steps": [r.repaired_steps for r in results],
            "semantic_preservation": [semantic_preservation(n, c) if c else None for n, c in zip(native["completion"], comps)],
            "semantic_judge": judged if judged is not None else [None] * len(comps),
            "edit_distance": [normalized_edit_distance(n, c) if c else None for n, c in zip(native["completion"], comps)],
            "n_chars": [len(c) if c else None for c in comps],
        },
        columns=VARIANT_COLUMNS,
    )


class OracleCollapsed(RuntimeError):
    """The first rewrites of a variant mostly failed to verify: the Oracle cannot do the job as configured."""


def reason_kind(reason: str) -> str:
    """A failure reason without its particulars, for counting ("failed after 3 attempts (answer wrong: 5 vs 7)"
    -> "answer wrong"; "answer no_answer: ..." -> "no final answer found")."""
    inner = re.search(r"\((.*)\)\s*$", reason) if reason.startswith("failed after") else None
    text = inner.group(1) if inner else reason
    if "no_answer" in text or "no final answer" in text:
        return "no final answer found"
    return text.split(":", 1)[0].strip() or "unknown"


def failure_counts(reasons) -> str:
    """"14 x answer wrong, 11 x no final answer found": the reasons, most frequent first."""
    counts = Counter(reason_kind(r) for r in reasons)
    return ", ".join(f"{n} x {kind}" for kind, n in counts.most_common())


def verified_line(variant: str, results: list[OracleResult]) -> str:
    ok = sum(r.ok for r in results)
    failed = [r.reason for r in results if not r.ok]
    return f"{variant}: {ok}/{len(results)} verified" + (f"; {failure_counts(failed)}" if failed else "")


def rewrite(oracle, task: str | None, items: list[OracleItem], variant: str, first: int, min_share: float,
            hint: str = "") -> list[OracleResult]:
    """The Oracle's results for every item, checking its first `first` before the rest: below `min_share`
    verified there, OracleCollapsed with the counts, the reasons and `hint` (what to check)."""
    head = oracle.run(task, items[:first])
    if head and sum(r.ok for r in head) / len(head) < min_share:
        where = f"the first {len(head)} of {len(items)} rewrites" if len(items) > len(head) else "every rewrite"
        raise OracleCollapsed(f"{verified_line(variant, head)}: {where} below oracle.min_verified_share = "
                              f"{min_share:g}, so the Oracle stopped there. {hint}".strip())
    return head + (oracle.run(task, items[first:]) if len(items) > first else [])


def write_variant(variant: Variant, oracle, items: list[OracleItem], settings: OracleSettings) -> list[OracleResult]:
    """A variant's writer over every item; an Oracle variant fails fast (`rewrite`) with what to check."""
    if variant.source != "oracle":
        return oracle.run(variant.oracle_task, items)
    task = variant.oracle_task
    if isinstance(oracle, LLMOracle):
        hint = (f"Check the Oracle's prompt ({task}.{PROMPT_VERSIONS[task]}), its chat template, oracle.model "
                f"({settings.model}) and oracle.max_tokens ({settings.max_tokens}); the rewrites so far are cached, "
                "so a fixed configuration resumes.")
    else:
        hint = "The symbolic Oracle could not check these traces: does the family's student write equations?"
    return rewrite(oracle, task, items, variant.name, settings.fail_fast_after, settings.min_verified_share, hint)


def failures_by_variant(common: pd.DataFrame) -> dict[str, list[str]]:
    """Each variant's failure reasons over the family's native traces, from common_problems' `reason` column."""
    out: dict[str, list[str]] = {}
    for reason in common.loc[~common["common"], "reason"]:
        for part in str(reason).split("; "):
            v, _, why = part.partition(": ")
            out.setdefault(v, []).append(why)
    return out


def common_set_message(common: pd.DataFrame, need: float) -> str:
    """Why the common set is too small, per variant ("style_aligned: 0/25 verified; 14 x answer wrong, ..."),
    and what to check."""
    n, kept = len(common), int(common["common"].sum())
    lines = [f"common set {kept}/{n} native traces ({kept / max(1, n):.0%}) is below min_common_fraction = {need:g}"]
    for v, reasons in sorted(failures_by_variant(common).items(), key=lambda kv: -len(kv[1])):
        lines.append(f"{v}: {n - len(reasons)}/{n} verified; {failure_counts(reasons)}")
    lines.append("Check the Oracle's prompt version, chat template, model and max_tokens (oracle: in the study "
                 "file), or the dataset's reference solutions for `reference`.")
    return "\n".join(lines)
