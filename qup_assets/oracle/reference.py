"""The dataset's own reference solutions as an Oracle: no model, each problem's reference verified against its
gold answer like any rewrite, so the reference variant goes through the same path as the Oracle variants."""

from __future__ import annotations

from typing import Mapping, Sequence

from qup_assets.oracle.base import OracleItem, OracleResult


class ReferenceOracle:
    name = "dataset"

    def __init__(self, references: Mapping[str, str | None], verifier):
        self.references = references
        self.verifier = verifier

    def run(self, task: str, items: Sequence[OracleItem]) -> list[OracleResult]:
        texts = [self.references.get(it.problem_id) for it in items]
        checks = self.verifier.verify_many([(it.answer, t or "") for it, t in zip(items, texts)])
        return [OracleResult(t, True, "verified") if t and c.correct else
                OracleResult(None, False, "no reference solution" if not t else f"reference does not verify: {c.reason}")
                for t, c in zip(texts, checks)]
