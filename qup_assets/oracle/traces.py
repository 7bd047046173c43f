"""A variant's trace table: what its writer (the Oracle or the dataset) produced for each native trace's problem,
verified, with its distance to the native trace. Failures stay as rows with their reason, never dropped."""

from __future__ import annotations

import pandas as pd

from qup_assets.adaptation.similarity import normalized_edit_distance, semantic_preservation
from qup_assets.oracle.base import OracleResult

VARIANT_COLUMNS = [
    "model_family", "problem_id", "prompt", "completion", "correct", "oracle", "attempts", "reason",
    "repaired_steps", "semantic_preservation", "semantic_judge", "edit_distance", "n_chars",
]


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
