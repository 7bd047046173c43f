"""Prompts are built one way for sampling, NLL scoring, training and evaluation."""

from __future__ import annotations

from qup_assets.study import PLAIN_TEMPLATES, Prompt


def messages(problem: str, prompt: Prompt) -> list[dict]:
    out = [{"role": "system", "content": prompt.system}] if prompt.system else []
    return out + [{"role": "user", "content": problem}]


def render_prompt(tokenizer, prompt: Prompt, problem: str) -> str:
    """The exact text the model sees before its answer (the chat template's generation prompt, or a plain template)."""
    if prompt.format == "plain":
        template = PLAIN_TEMPLATES.get(prompt.template, prompt.template)
        return template.replace("{problem}", problem)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("prompt format is chat_template but the tokenizer has none: use format: plain with a template")
    return tokenizer.apply_chat_template(messages(problem, prompt), tokenize=False, add_generation_prompt=True)

