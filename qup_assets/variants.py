"""The study's training-data variants, in one registry.

Every variant is a set of traces on the family's common problems; the asset graph (traces, adaptation,
rewards, checkpoints, evaluation), the common problem set, the report's rows, `qup plan` and the tests
all read this list. Adding a variant is one entry here plus, for an Oracle variant, its task in the
Oracles (oracle/symbolic.py, oracle/llm.py with its versioned prompt); a selected variant names the sources
its candidates come from (adaptation/selection.py picks among them by the student's per-token NLL).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

# The columns of every non-native variant's trace table (`{variant}_traces`): one row per native trace, failures
# kept with their reason; semantic preservation and edit distance against the native trace.
VARIANT_COLUMNS = [
    "model_family", "problem_id", "prompt", "completion", "correct", "oracle", "attempts", "reason",
    "repaired_steps", "semantic_preservation", "semantic_judge", "edit_distance", "n_chars",
]


@dataclass(frozen=True)
class PaperRow:
    """The paper's numbers for the variant (Qwen2.5-Math-1.5B; DESIGN.md section 1)."""

    name: str
    dft_avg_at_16: float
    mean_reward: float
    ppl: float


@dataclass(frozen=True)
class Variant:
    name: str
    label: str  # how tables and plots name it
    # "student" (sampled and verified), "oracle" (rewritten by the Oracle), "dataset" (the reference),
    # "selected" (per problem, the verified candidate of `candidates` the student finds least surprising)
    source: str
    description: str
    oracle_task: str | None = None  # the Oracle's task (oracle/base.py TASKS) for source == "oracle"
    paper: PaperRow | None = None
    candidates: tuple[str, ...] = ()  # for source == "selected": the sources whose verified traces compete

    @property
    def group(self) -> str:
        """The Dagster asset group: native traces belong with the students, every other variant has its own."""
        return "students" if self.source == "student" else self.name


REGISTRY: list[Variant] = [
    Variant("native", "SLM-RFT (native)", "student",
            "SLM-RFT: the student's own rejection-sampled traces, one verified-correct sample per problem.",
            paper=PaperRow("SLM-RFT", 37.06, 1.47, 1.52)),
    Variant("oracle_refined", "Oracle-Refined", "oracle",
            "Oracle-Refined: the Oracle polishes each native trace into its own clear, rigorous style and fixes "
            "anything wrong, the student's steps kept (the symbolic Oracle rewrites a share of the traces in its "
            "compact form and hands the rest back with the repairs only).",
            oracle_task="refine", paper=PaperRow("Oracle-Refined", 34.06, 1.70, 1.85)),
    Variant("oracle_synthesized", "Oracle-Synthesized", "oracle",
            "Oracle-Synthesized: the Oracle solves each problem from scratch, in its own style.",
            oracle_task="synthesize", paper=PaperRow("Oracle-Synthesized", 30.02, 1.88, 2.69)),
    Variant("reference", "Reference solutions", "dataset",
            "The dataset's own reference solution for the same problems (the NuminaMath-subset analogue).",
            paper=PaperRow("NuminaMath (reference)", 31.28, 1.78, float("nan"))),
    Variant("style_aligned", "Style-Aligned", "oracle",
            "Style-Aligned Refinement: the Oracle fixes logical errors while strictly keeping the student's "
            "wording, spacing, step granularity and notation.",
            oracle_task="style_align", paper=PaperRow("Style-Aligned (Qwen-72B oracle)", 39.12, 1.37, 1.46)),
    Variant("compat_selected", "Compat-Selected", "selected",
            "Compat-Selected: for each problem, among every verified-correct candidate (the student's own correct "
            "samples and the Oracle variants' traces), the one with the lowest per-token NLL under the student. "
            "Selected, not rewritten: no model call beyond scoring the candidates. It tests whether choosing data "
            "by the learner's perplexity (the paper's suggested direction) beats choosing it by reward, on the "
            "same problems.",
            candidates=("student", "oracle")),
]

BASE_LABEL = "base model (no fine-tuning)"


def all_variants() -> list[Variant]:
    """Every variant, in report order (read at call time, so a test may add one to REGISTRY)."""
    return list(REGISTRY)


def names() -> list[str]:
    return [v.name for v in REGISTRY]


def rewrites() -> list[Variant]:
    """The variants made from the native traces' problems (everything but native itself)."""
    return [v for v in REGISTRY if v.source != "student"]


def sources(*kinds: str) -> list[Variant]:
    """The variants whose traces come from the given sources ("student", "oracle", "dataset", "selected")."""
    return [v for v in REGISTRY if v.source in kinds]


def oracle_tasks() -> list[str]:
    return [v.oracle_task for v in REGISTRY if v.oracle_task]


def get(name: str) -> Variant:
    for v in REGISTRY:
        if v.name == name:
            return v
    raise KeyError(f"unknown variant {name!r} (known: {', '.join(names())})")


def label(name: str) -> str:
    """A variant's label; "base" is the base model, and an unknown name reads as itself."""
    if name == "base":
        return BASE_LABEL
    return next((v.label for v in REGISTRY if v.name == name), name)


# ---------------------------------------------------------------- the problems every variant shares


def common_set(family: str, native: pd.DataFrame, tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per native trace: whether every variant in `tables` has a verified trace for its problem (the
    family's common set: every score, training run and evaluation uses exactly it), else which failed and why,
    and which variants needed retries."""
    ids = native["problem_id"]
    failed: dict[str, list[str]] = {pid: [] for pid in ids}
    retried: dict[str, list[str]] = {pid: [] for pid in ids}
    for v, df in tables.items():
        for pid in df.loc[df["attempts"] > 1, "problem_id"]:
            retried.setdefault(pid, []).append(v)
        ok = dict(zip(df["problem_id"], df["correct"]))
        why = dict(zip(df["problem_id"], df["reason"]))
        for pid in ids:
            if not ok.get(pid, False):
                failed[pid].append(f"{v}: {why.get(pid, 'missing')}")
    return pd.DataFrame({
        "model_family": family,
        "problem_id": ids.values,
        "common": [not failed[p] for p in ids],
        "reason": ["; ".join(failed[p]) for p in ids],
        "retried_variants": [",".join(retried[p]) for p in ids],
    })


class EmptyCommonSet(ValueError):
    """No problem has a verified trace in every variant: nothing downstream can be computed."""


def on_common_set(traces: pd.DataFrame, common: pd.DataFrame) -> pd.DataFrame:
    """The traces of the family's common problem set, in the common set's order; EmptyCommonSet when it has none."""
    ids = common.loc[common["common"], "problem_id"]
    if ids.empty:
        family = common["model_family"].iloc[0] if len(common) and "model_family" in common else "?"
        raise EmptyCommonSet(f"common_problems[{family}] is empty: no problem has a verified trace in every variant "
                             f"(of {len(common)} native traces); its check common_problems_large_enough says which "
                             "variants failed and why")
    return ids.to_frame().merge(traces, on="problem_id", how="left")
