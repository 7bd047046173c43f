"""How each writer of the synthetic world solves a problem: the families' native styles and the Oracle's.

Styles differ the way real models differ: wording, step labels, spacing around
operators, math delimiters and the final-answer marker. The Oracle's style is
compact (`\\(12+5=17\\)`, no spaces, few words): the paper's "syntactic compaction".
Every style writes each step as one equation `a OP b = r` so the symbolic Oracle
can parse, check and repair any of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from qup_assets.world.generator import Program


@dataclass(frozen=True)
class Style:
    name: str
    intro: str
    step: str  # fields: i, verb, v, op, b, r, items
    answer: str  # fields: r, items
    ops: dict  # op -> symbol as this writer types it
    verbs: dict
    joiner: str = "\n"

    def render(self, program: Program, items: str = "items") -> str:
        values = program.values()
        steps = [(v, s.op, s.arg, r) for s, v, r in zip(program.steps, values, values[1:])]
        return self.render_steps(steps, program.answer, items)

    def render_steps(self, steps: list[tuple], answer, items: str = "items") -> str:
        """Steps as (a, op, b, r) with op in add/sub/mul/div, then the final answer line."""
        lines = [self.intro.format(v=steps[0][0] if steps else answer, items=items)] if self.intro else []
        for i, (a, op, b, r) in enumerate(steps, start=1):
            lines.append(self.step.format(i=i, verb=self.verbs[op], v=a, op=self.ops[op], b=b, r=r, items=items))
        if answer is not None:  # None: a solution cut off before its answer line
            lines.append(self.answer.format(r=answer, items=items))
        return self.joiner.join(lines)


STYLES: dict[str, Style] = {
    # A Qwen-like student: numbered steps, $...$ with spaced operators, \boxed{} at the end.
    "qwen": Style(
        name="qwen",
        intro="Let's solve this step by step.",
        step="Step {i}: {verb} {b}: $ {v} {op} {b} = {r} $",
        answer="The final answer is $\\boxed{{{r}}}$.",
        ops={"add": "+", "sub": "-", "mul": "\\times", "div": "\\div"},
        verbs={"add": "Add", "sub": "Subtract", "mul": "Multiply by", "div": "Divide by"},
    ),
    # A Llama-like student: prose bullets, plain-text arithmetic, "The answer is" marker.
    "llama": Style(
        name="llama",
        intro="We start with {v} {items}.",
        step="- After we {verb} {b}, we have {v} {op} {b} = {r} {items}.",
        answer="The answer is {r}.",
        ops={"add": "+", "sub": "-", "mul": "*", "div": "/"},
        verbs={"add": "add", "sub": "take away", "mul": "multiply by", "div": "divide by"},
    ),
    # The Oracle: compact LaTeX, no spaces, almost no words.
    "oracle": Style(
        name="oracle",
        intro="",
        step="\\({v}{op}{b}={r}\\)",
        answer="Answer: \\(\\boxed{{{r}}}\\)",
        ops={"add": "+", "sub": "-", "mul": "\\times", "div": "\\div"},
        verbs={"add": "", "sub": "", "mul": "", "div": ""},
    ),
}


def get_style(name: str) -> Style:
    try:
        return STYLES[name]
    except KeyError:
        raise ValueError(f"unknown style {name!r}; known styles: {sorted(STYLES)}") from None
