"""Where a sample ends: every token id its model's own evaluation stops at.

A base model given a chat prompt closes its answer with the template's end-of-turn token (Qwen2.5-Math:
<|im_end|>) although its tokenizer and generation_config.json name another eos (<|endoftext|>); Qwen's own
evaluation stops at both. A backend that stops at one only lets the model run on to max_tokens, and the last
\\boxed{} of that continuation is what gets graded.
"""

from __future__ import annotations

_MARK = "\u2063qup-end-of-turn-probe\u2063"


def end_of_turn_id(tokenizer) -> int | None:
    """The special token the chat template writes right after an assistant message, if it has a template."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "1+1?"},
                                              {"role": "assistant", "content": _MARK}], tokenize=False)
    except Exception:  # noqa: BLE001 - a template that cannot render this pair has no end-of-turn to offer
        return None
    after = text.split(_MARK, 1)[1] if _MARK in text else ""
    ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
    special = set(getattr(tokenizer, "all_special_ids", []) or []) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    return ids[0] if ids and ids[0] in special else None


def stop_token_ids(tokenizer, generation_config=None) -> list[int]:
    """The tokenizer's eos, generation_config's eos_token_id (an id or a list) and the chat template's
    end-of-turn token, sorted."""
    ids = {getattr(tokenizer, "eos_token_id", None), end_of_turn_id(tokenizer)}
    gen = getattr(generation_config, "eos_token_id", None) if generation_config is not None else None
    ids |= set(gen if isinstance(gen, (list, tuple)) else [gen])
    return sorted(i for i in ids if isinstance(i, int))
