"""Prompts against the study's token budget for them (max_prompt_tokens), before any engine opens.

The study file checks at load that every engine's context holds max_prompt_tokens plus its max_tokens
(study/schema.py); this checks the other half, the prompts themselves, once they are rendered.
"""

from __future__ import annotations

from typing import Sequence

from qup_assets.backends.base import BackendError


class PromptTooLong(BackendError):
    """Rendered prompts longer than max_prompt_tokens: their answers would not fit the engine's context."""


def check_prompt_tokens(tokenizer, prompts: Sequence[str], ids: Sequence[str], limit: int, what: str) -> int:
    """The longest prompt's token count; PromptTooLong naming the longest ones when any exceeds `limit`."""
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    over = sorted(((n, i) for n, i in zip(lengths, ids) if n > limit), reverse=True)
    if over:
        worst = ", ".join(f"{i} ({n})" for n, i in over[:5])
        raise PromptTooLong(
            f"{len(over)} of {len(prompts)} {what} prompts are longer than max_prompt_tokens {limit} (longest: "
            f"{worst}): raise max_prompt_tokens in the study (it must fit beside max_tokens in every engine's "
            "context) or leave those problems out")
    return max(lengths, default=0)
