"""An LLM Oracle (e.g. Qwen2.5-Math-72B-Instruct) through any language-model backend and the response cache.

Prompts are versioned files in oracle/prompts (`<task>.v<N>.txt`); the version is recorded on
every trace. Output parsing tolerates preambles and code fences. A rewrite whose answer does
not verify is retried with a fresh seed up to `max_retries` times, then recorded as a failure.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from qup_assets.backends.base import Request, SamplingParams
from qup_assets.backends.cache import ResponseCache, cached_sample
from qup_assets.oracle.base import OracleItem, OracleResult

PROMPTS = Path(__file__).parent / "prompts"
# Each task's prompt version. refine v2 (2026-12-03): "polish a trace into the Oracle's own clear, rigorous
# style, fixing anything wrong", as the symbolic Oracle's refine means; v1 asked for minimal intervention,
# which on an already-correct trace may hand the native trace back.
PROMPT_VERSIONS = {"refine": "v2", "synthesize": "v1", "style_align": "v1"}
PROMPT_VERSION = "-".join(f"{k}.{v}" for k, v in sorted(PROMPT_VERSIONS.items()))
MAX_OUTPUT_CHARS = 20_000


def prompt_template(kind: str, version: str | None = None) -> str:
    return (PROMPTS / f"{kind}.{version or PROMPT_VERSIONS[kind]}.txt").read_text(encoding="utf-8")


def parse_output(text: str) -> str | None:
    """The solution in an Oracle reply: inside <solution> tags, else a code fence, else the whole reply
    minus a short preamble line ("Here is the corrected solution:"). None when nothing usable remains."""
    if not text or len(text) > MAX_OUTPUT_CHARS:
        return None
    m = re.search(r"<solution>\s*(.*?)\s*(?:</solution>|$)", text, re.DOTALL | re.IGNORECASE)
    body = m.group(1) if m else text
    fence = re.search(r"```[a-zA-Z]*\n(.*?)```", body, re.DOTALL)
    if fence and not m:
        body = fence.group(1)
    lines = body.strip().split("\n")
    if len(lines) > 1 and re.match(r"^\s*(here is|here's|sure|below is|corrected solution|repaired solution)\b.*:\s*$",
                                   lines[0], re.IGNORECASE):
        lines = lines[1:]
    body = "\n".join(lines).strip()
    return body or None


class LLMOracle:
    def __init__(self, lm, cache: ResponseCache, verifier, model_name: str, temperature: float = 0.7,
                 max_tokens: int = 2048, max_retries: int = 2, seed: int = 0, chat_format=None):
        self.lm, self.cache, self.verifier = lm, cache, verifier
        self.name = f"llm:{model_name}:prompts-{PROMPT_VERSION}"
        self.temperature, self.max_tokens, self.max_retries, self.seed = temperature, max_tokens, max_retries, seed
        # Turns a user message into the text the backend expects (a chat template for local models).
        self.chat_format = chat_format or (lambda text: text)

    def prompt(self, kind: str, item: OracleItem) -> str:
        text = prompt_template(kind).replace("{problem}", item.problem).replace("{trace}", item.native or "")
        return self.chat_format(text)

    def run(self, kind: str, items: Sequence[OracleItem], progress=None) -> list[OracleResult]:
        results: list[OracleResult | None] = [None] * len(items)
        last_reason = ["no attempt"] * len(items)
        pending = [i for i, it in enumerate(items) if kind == "synthesize" or it.native is not None]
        for i in set(range(len(items))) - set(pending):
            results[i] = OracleResult(None, False, "no native trace to rewrite", 0)
        for attempt in range(self.max_retries + 1):
            if not pending:
                break
            params = SamplingParams(temperature=self.temperature, max_tokens=self.max_tokens, seed=self.seed + attempt)
            reqs = [Request(self.prompt(kind, items[i])) for i in pending]
            outs = cached_sample(self.lm, self.cache, reqs, params, progress=progress, label=f"oracle {kind} try {attempt + 1}")
            parsed = [None if o.finish_reason == "prompt_too_long" else parse_output(o.text) for o in outs]
            checks = self.verifier.verify_many([(items[i].answer, p or "") for i, p in zip(pending, parsed)])
            still = []
            for i, p, c, o in zip(pending, parsed, checks, outs, strict=True):
                if p is not None and c.correct:
                    results[i] = OracleResult(p, True, "verified", attempt + 1)
                elif o.finish_reason == "prompt_too_long":  # another seed cannot make it fit: no retry
                    results[i] = OracleResult(None, False, "failed: the prompt is longer than the Oracle's context "
                                              "(raise the server's max model length)", attempt + 1)
                else:
                    last_reason[i] = "unparsable reply" if p is None else f"answer {c.verdict}: {c.reason}"
                    still.append(i)
            pending = still
        for i in pending:
            results[i] = OracleResult(None, False, f"failed after {self.max_retries + 1} attempts ({last_reason[i]})",
                                      self.max_retries + 1)
        return results  # type: ignore[return-value]
