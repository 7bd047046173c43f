"""Prompts are built one way for sampling, NLL scoring, training and evaluation."""

from __future__ import annotations

import re

from qup_assets.study import PLAIN_TEMPLATES, Prompt

_MARKER = re.compile(r"<\|[A-Za-z0-9_]+\|>")


def messages(problem: str, prompt: Prompt) -> list[dict]:
    out = [{"role": "system", "content": prompt.system}] if prompt.system else []
    return out + [{"role": "user", "content": problem}]


def render_prompt(tokenizer, prompt: Prompt, problem: str) -> str:
    """The exact text the model sees before its answer (the chat template's generation prompt, or a plain template)."""
    if prompt.format == "plain":
        template = PLAIN_TEMPLATES.get(prompt.template, prompt.template)
        check_markers(tokenizer, template, prompt.template)
        return template.replace("{problem}", problem)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("prompt format is chat_template but the tokenizer has none: use format: plain with a template")
    return tokenizer.apply_chat_template(messages(problem, prompt), tokenize=False, add_generation_prompt=True)


def check_markers(tokenizer, template: str, name: str | None = None) -> None:
    """A plain template's special markers (<|im_start|>, <|eot_id|>, ...) must be single tokens of this
    tokenizer: a Llama or DeepSeek tokenizer reads ChatML's markers as plain text, and the model would see
    a prompt format it was never trained on."""
    for marker in sorted(set(_MARKER.findall(template))):
        tid = tokenizer.convert_tokens_to_ids(marker)
        if tid is None or tid == tokenizer.unk_token_id:
            raise ValueError(
                f"prompt template {name or template[:40]!r} uses {marker}, which this tokenizer does not know as "
                f"a token (it would read it as plain text): for a base model without ChatML use "
                f"`prompt: {{format: plain, template: question-boxed}}`, for an instruct model "
                f"`prompt: {{format: chat_template}}`")
