"""An LLM judge of semantic preservation, as the paper used a GPT judge: the Oracle's backend reads the native
trace and a variant and scores how much of the native reasoning the variant keeps (0-10, scaled to 0-1).

Optional (`oracle.semantic_judge: true`, an LLM Oracle only): the atom score of similarity.py is always
computed; the judge adds a second opinion that also sees wording-level meaning. The prompt is a versioned
file, every reply goes through the response cache, and a reply without a readable score is recorded as
missing (None), never guessed.
"""

from __future__ import annotations

import re
from typing import Sequence

from qup_assets.backends.base import Request, SamplingParams
from qup_assets.backends.cache import ResponseCache, cached_sample
from qup_assets.oracle.llm import prompt_template

JUDGE_PROMPT_VERSION = "v1"
_SCORE = re.compile(r"score\s*[:=]\s*(\d{1,2}(?:\.\d+)?)\s*(?:/\s*10)?", re.IGNORECASE)


def parse_score(reply: str | None) -> float | None:
    """The last "Score: N" (0 <= N <= 10) in a reply, scaled to 0-1; None when there is none."""
    hits = _SCORE.findall(reply or "")
    if not hits:
        return None
    value = float(hits[-1])
    return value / 10 if 0 <= value <= 10 else None


def judge_preservation(lm, cache: ResponseCache, natives: Sequence[str], variants: Sequence[str | None],
                       chat_format=None, max_tokens: int = 512, progress=None) -> list[float | None]:
    """One judged score per (native, variant) pair; pairs without a variant text are None."""
    template = prompt_template("semantic_judge", JUDGE_PROMPT_VERSION)
    fmt = chat_format or (lambda text: text)
    idx = [i for i, v in enumerate(variants) if v]
    reqs = [Request(fmt(template.replace("{native}", natives[i]).replace("{variant}", variants[i]))) for i in idx]
    outs = cached_sample(lm, cache, reqs, SamplingParams(temperature=0.0, max_tokens=max_tokens, seed=0),
                         progress=progress, label="semantic judge") if reqs else []
    scores: list[float | None] = [None] * len(variants)
    for i, o in zip(idx, outs):
        scores[i] = parse_score(o.text)
    return scores
