"""The answer-checking conformance suite: labelled (gold, model text) pairs from Math-Verify's own tests,
also written in the minerva_math and Qwen2.5-Math formats (fixtures/conformance/), scored through qup's
pipeline path and through math-verify called directly with its defaults. Shared by the test and `make bench`.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from qup_assets.mathcore.extract import gold_from_cell
from qup_assets.mathcore.verify import VerifierPool

CASES_FILE = Path(__file__).parent / "fixtures" / "conformance" / "math_verify_cases.jsonl"

# A model answer "given in a format": a box, an answer marker or a math delimiter (the scope for
# the standard formats; a bare "1,000.99m²" is a base model's text, for qwen_math's last-number fallback).
FORMATTED = re.compile(r"\\boxed|\\fbox|answer|\$[^$]+\$|\\\(|\\\[", re.IGNORECASE)


def load_cases() -> list[dict]:
    """The labelled pairs, less the ones whose label comes from a Math-Verify setting qup departs from on
    purpose: qup compares sets with relations both ways (a gold interval [-2,7] accepts -2 <= x <= 7), so a
    pair labelled "not equal" only because its test switched that comparison off is left out."""
    rows = [json.loads(line) for line in CASES_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if not (r["settings"].get("allow_set_relation_comp") is False and not r["expected"])]


def direct_verdicts(cases: list[dict]) -> list[bool | None]:
    """math-verify with its defaults on the raw strings (these are trusted fixture strings: its
    expression path, which qup never uses on model text, is part of its defaults)."""
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    out = []
    for c in cases:
        try:
            out.append(bool(verify(parse(c["gold"]), parse(c["pred"]))))
        except Exception:  # a crash is no verdict: neither an agreement nor a disagreement with the label
            out.append(None)
    return out


def qup_verdicts(cases: list[dict], formats: str = "standard") -> list[bool]:
    """qup's pipeline path: the gold as a problem row's answer cell, the model text through extraction,
    comparison in the killable workers."""
    with VerifierPool(workers=2, timeout=5.0, answer_formats=formats) as pool:
        results = pool.verify_many([(gold_from_cell(c["gold"]) or "", c["pred"]) for c in cases])
    return [r.correct for r in results]


@dataclass(frozen=True)
class Agreement:
    n: int  # cases with a verdict
    agree: int
    wrong_accepts: int  # accepted although labelled not equal
    not_equal: int
    crashed: int = 0  # no verdict: the checker raised

    def __str__(self) -> str:
        return (f"{self.agree}/{self.n} agree ({self.agree / max(self.n, 1):.1%}), {self.wrong_accepts}/{self.not_equal} "
                f"wrong acceptances, {self.crashed} crashed")


def agreement(cases: list[dict], verdicts: list[bool | None]) -> Agreement:
    decided = [(v, c["expected"]) for c, v in zip(cases, verdicts) if v is not None]
    return Agreement(
        n=len(decided),
        agree=sum(v == e for v, e in decided),
        wrong_accepts=sum(v and not e for v, e in decided),
        not_equal=sum(not e for _, e in decided),
        crashed=len(cases) - len(decided),
    )


def scopes(cases: list[dict]) -> dict[str, list[int]]:
    """Indices of the cases each answer-format setting is measured on."""
    formatted = [i for i, c in enumerate(cases) if FORMATTED.search(c["pred"])]
    return {"standard": formatted, "qwen_math": list(range(len(cases)))}
