"""How each writer of the synthetic world solves a problem: the families' native styles and the Oracle's.

Styles differ the way real models differ: wording, step labels, spacing around operators, math
delimiters and the final-answer marker. A student's style allows harmless variety, as a real model's
does: a few intros, step phrasings (verb first or equation first), equation notations and answer lines,
drawn per solution and per step when a writer samples (`rng`), so a student that solves a problem eight
times writes it several ways. The Oracle's style is one fixed compact form (`\\(12+5=17\\)`, no spaces,
no words): the paper's "syntactic compaction". Every style writes each step as one equation
`a OP b = r` so the symbolic Oracle and the process RM can parse, check and repair any of them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from qup_assets.world.generator import Program


@dataclass(frozen=True)
class Style:
    name: str
    intros: tuple[str, ...]  # fields: v, items; "" writes no intro line
    steps: tuple[str, ...]  # fields: i, verb, Verb, eq, b, items
    equations: tuple[str, ...]  # fields: v, op, b, r: how this writer types one equation
    answers: tuple[str, ...]  # fields: r, items
    ops: dict  # op -> symbol as this writer types it
    verbs: dict  # op -> the verbs this writer uses for it

    def render(self, program: Program, items: str = "items", rng: random.Random | None = None) -> str:
        values = program.values()
        steps = [(v, s.op, s.arg, r) for s, v, r in zip(program.steps, values, values[1:])]
        return self.render_steps(steps, program.answer, items, rng)

    def render_steps(self, steps: list[tuple], answer, items: str = "items", rng: random.Random | None = None) -> str:
        """Steps as (a, op, b, r) with op in add/sub/mul/div, then the final answer line (none when `answer`
        is None: a solution cut off). Without `rng` the writer's first choice everywhere (deterministic)."""
        pick = rng.choice if rng is not None else (lambda options: options[0])
        intro, equation, answer_line = pick(self.intros), pick(self.equations), pick(self.answers)
        lines = [intro.format(v=steps[0][0] if steps else answer, items=items)] if intro else []
        for i, (a, op, b, r) in enumerate(steps, start=1):
            lines.append(self.step_line(i, a, op, b, r, items, pick(self.steps), equation, pick(self.verbs[op])))
        if answer is not None:
            lines.append(answer_line.format(r=answer, items=items))
        return "\n".join(lines)

    def step_line(self, i: int, a, op: str, b, r, items: str = "items", template: str | None = None,
                  equation: str | None = None, verb: str | None = None) -> str:
        """One step as this writer writes it (its first phrasing unless told otherwise)."""
        verb = verb if verb is not None else self.verbs[op][0]
        eq = (equation or self.equations[0]).format(v=a, op=self.ops[op], b=b, r=r)
        return (template or self.steps[0]).format(i=i, verb=verb, Verb=verb[:1].upper() + verb[1:], eq=eq, b=b,
                                                  items=items)


STYLES: dict[str, Style] = {
    # A Qwen-like student: numbered steps, spaced operators in $...$ (or \(...\)), \boxed{} at the end.
    "qwen": Style(
        name="qwen",
        intros=("Let's solve this step by step.", "Let's think step by step.", "We solve it step by step."),
        steps=("Step {i}: {Verb} {b}: {eq}", "Step {i}: {eq}, since we {verb} {b}.", "Step {i}: We {verb} {b}, so {eq}"),
        equations=("$ {v} {op} {b} = {r} $", "${v} {op} {b} = {r}$", "\\( {v} {op} {b} = {r} \\)"),
        answers=("The final answer is $\\boxed{{{r}}}$.", "So the final answer is $\\boxed{{{r}}}$.",
                 "Therefore, the answer is $\\boxed{{{r}}}$.", "Answer: $\\boxed{{{r}}}$",
                 "The final answer is \\(\\boxed{{{r}}}\\)."),
        ops={"add": "+", "sub": "-", "mul": "\\times", "div": "\\div"},
        verbs={"add": ("add", "add on"), "sub": ("subtract", "take off"), "mul": ("multiply by", "scale by"),
               "div": ("divide by", "split by")},
    ),
    # A Llama-like student: prose bullets, plain-text arithmetic, "The answer is" marker.
    "llama": Style(
        name="llama",
        intros=("We start with {v} {items}.", "At first there are {v} {items}.", "Initially we have {v} {items}."),
        steps=("- After we {verb} {b}, we have {eq} {items}.", "- We {verb} {b}: {eq} {items}.",
               "- {Verb} {b} to get {eq} {items}."),
        equations=("{v} {op} {b} = {r}", "{v} {op} {b}={r}", "{v}{op}{b} = {r}"),
        answers=("The answer is {r}.", "So the answer is {r}.", "The answer is {r} {items}.", "Answer: {r}"),
        ops={"add": "+", "sub": "-", "mul": "*", "div": "/"},
        verbs={"add": ("add", "put in"), "sub": ("take away", "remove"), "mul": ("multiply by", "scale up by"),
               "div": ("divide by", "split evenly by")},
    ),
    # The Oracle: compact LaTeX, no spaces, no words, one form.
    "oracle": Style(
        name="oracle",
        intros=("",),
        steps=("{eq}",),
        equations=("\\({v}{op}{b}={r}\\)",),
        answers=("Answer: \\(\\boxed{{{r}}}\\)",),
        ops={"add": "+", "sub": "-", "mul": "\\times", "div": "\\div"},
        verbs={"add": ("",), "sub": ("",), "mul": ("",), "div": ("",)},
    ),
}


def get_style(name: str) -> Style:
    try:
        return STYLES[name]
    except KeyError:
        raise ValueError(f"unknown style {name!r}; known styles: {sorted(STYLES)}") from None
