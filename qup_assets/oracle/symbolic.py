"""The synthetic world's Oracle: parses each step, checks it with exact rational arithmetic, repairs it.

Never evaluates text: equations are matched by a regular expression and computed with
`fractions.Fraction` on the parsed numbers. With the problem's program (synthetic
rows) every step is checked against the true chain of values; without one, each
equation's own arithmetic is checked and corrected values are propagated forward.

- refine:      the Oracle's polish of the student's trace, on every trace: the repairs made, the student's
               steps, order and words kept, the conclusion written as the Oracle writes it (its answer line
               `Answer: \\(\\boxed{17}\\)`). How much a polish moves is calibrated to the paper's Table 2
               (Oracle-Refined's PPL under the student ~1.2x SLM-RFT's), an input measurement: under the tiny
               students (2026-12-05, 120 native traces each) the answer line alone costs 1.31x (qwen) and 1.61x
               (llama), every equation in the Oracle's notation 17.7x and 21.2x, spacing compacted inside the
               student's own delimiters 7.1x: these students read one narrow style, so a fuller polish would be a
               text no real polish is. Never the student's text (Style-Aligned) nor the Oracle's own (Synthesized)
- synthesize:  a solution from the program, in the Oracle's style
- style_align: the repairs written into the student's own text; nothing else changes
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

from qup_assets.mathcore.extract import extract_answer
from qup_assets.oracle.base import OracleItem, OracleResult
from qup_assets.world.generator import Program
from qup_assets.world.styles import STYLES, Style, get_style

_NUM = r"-?\d+(?:\.\d+)?"
_EQ = re.compile(rf"(?P<a>{_NUM})(?P<s1>\s*)(?P<op>\+|-|\\times|\*|×|\\cdot|\\div|/|÷)(?P<s2>\s*)(?P<b>{_NUM})\s*=\s*(?P<r>{_NUM})")
_OP_NAME = {"+": "add", "-": "sub", "\\times": "mul", "*": "mul", "×": "mul", "\\cdot": "mul",
            "\\div": "div", "/": "div", "÷": "div"}
_MAX_STEPS = 64


@dataclass
class ParsedStep:
    a: Fraction
    op: str
    b: Fraction
    r: Fraction
    match: re.Match


def parse_steps(text: str) -> list[ParsedStep]:
    out = []
    for m in _EQ.finditer(text):
        out.append(ParsedStep(Fraction(m["a"]), _OP_NAME[m["op"]], Fraction(m["b"]), Fraction(m["r"]), m))
        if len(out) >= _MAX_STEPS:
            break
    return out


def compute(a: Fraction, op: str, b: Fraction) -> Fraction | None:
    if op == "add":
        return a + b
    if op == "sub":
        return a - b
    if op == "mul":
        return a * b
    return a / b if b != 0 else None


def fmt(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


Step = tuple  # (a, op, b, r) as Fractions


def _expected(program_json: str) -> list[Step]:
    p = Program.from_json(program_json)
    v = p.values()
    return [(Fraction(a), s.op, Fraction(s.arg), Fraction(r)) for s, a, r in zip(p.steps, v, v[1:])]


def repair(parsed: list[ParsedStep], program_json: str | None) -> tuple[list[Step], int]:
    """The corrected chain of steps and how many steps were wrong (or missing or extra)."""
    if program_json:
        expected = _expected(program_json)
        wrong = sum(1 for p, e in zip(parsed, expected) if (p.a, p.op, p.b, p.r) != e)
        return expected, wrong + abs(len(parsed) - len(expected))
    fixed: list[Step] = []
    subst: dict[Fraction, Fraction] = {}
    wrong = 0
    for p in parsed:
        a, b = subst.get(p.a, p.a), subst.get(p.b, p.b)
        r = compute(a, p.op, b)
        if r is None:
            r = p.r
        if (a, b, r) != (p.a, p.b, p.r):
            wrong += 1
            if r != p.r:
                subst[p.r] = r
        fixed.append((a, p.op, b, r))
    return fixed, wrong


def _replace_token(text: str, old: str, new: str) -> str:
    return re.sub(rf"(?<![\d.]){re.escape(old)}(?![\d.])", new, text)


def _answer_span(text: str) -> tuple[int, int] | None:
    """Where the final answer's number sits (the last \\boxed{N} or 'answer is N')."""
    spans = [m.span(1) for m in re.finditer(rf"\\boxed\{{\s*({_NUM})\s*\}}", text)]
    spans += [m.span(1) for m in re.finditer(rf"answer\s*(?:is|:)\s*\$?\s*({_NUM})", text, re.IGNORECASE)]
    return max(spans) if spans else None


class SymbolicOracle:
    def __init__(self, verifier, student_style: str | None = None, items_word: str = "items"):
        self.name = "symbolic-v3:polish-answer-line"
        self.verifier = verifier
        self.oracle_style: Style = STYLES["oracle"]
        self.student_style = get_style(student_style) if student_style else None
        self.items_word = items_word

    def run(self, kind: str, items: Sequence[OracleItem]) -> list[OracleResult]:
        drafts = [self._one(kind, it) for it in items]
        checks = self.verifier.verify_many(
            [(it.answer, d.completion or "") for it, d in zip(items, drafts)]
        )
        out = []
        for d, c in zip(drafts, checks):
            if d.completion is None:
                out.append(d)
            elif not c.correct:
                out.append(OracleResult(d.completion, False, f"rewrite does not verify: {c.verdict} ({c.reason})",
                                        1, d.repaired_steps))
            else:
                out.append(d)
        return out

    def _one(self, kind: str, it: OracleItem) -> OracleResult:
        if kind == "synthesize":
            if not it.program:
                return OracleResult(None, False, "the symbolic oracle needs the problem's program to solve from scratch")
            steps = _expected(it.program)
            return OracleResult(self._render_oracle(steps, steps[-1][3] if steps else Fraction(it.answer)), True, "solved")
        if it.native is None:
            return OracleResult(None, False, "no native trace to rewrite")
        parsed = parse_steps(it.native)
        if not parsed and not it.program:
            return OracleResult(None, False, "no equation found in the trace to check")
        steps, wrong = repair(parsed, it.program)
        final = steps[-1][3] if steps else None
        if kind == "refine":
            answer = fmt(final) if final is not None else extract_answer(it.native).answer
            polished = self._polish(self._align(it.native, parsed, steps, final), answer)
            return OracleResult(polished, True, "polished" + (", repaired" if wrong else ""), 1, wrong)
        if kind == "style_align":
            return OracleResult(self._align(it.native, parsed, steps, final), True,
                                "repaired" if wrong else "unchanged", 1, wrong)
        raise ValueError(f"unknown oracle task {kind!r}")

    def _render_oracle(self, steps: list[Step], answer) -> str:
        conv = [(fmt(a), op, fmt(b), fmt(r)) for a, op, b, r in steps]
        return self.oracle_style.render_steps(conv, fmt(answer) if isinstance(answer, Fraction) else answer, self.items_word)

    def _polish(self, text: str, answer) -> str:
        """The student's (repaired) text with its final-answer line written as the Oracle writes it."""
        span = _answer_span(text)
        line = self.oracle_style.answers[0].format(r=answer, items=self.items_word)
        if span is None or answer is None:
            return text.rstrip("\n") + "\n" + line if answer is not None else text
        start, end = text.rfind("\n", 0, span[0]) + 1, text.find("\n", span[1])
        return text[:start] + line + ("" if end < 0 else text[end:])

    def _align(self, text: str, parsed: list[ParsedStep], steps: list[Step], final: Fraction | None) -> str:
        """Minimal edits to the student's text: wrong numbers replaced in place, missing steps added in
        the student's own step format, extra steps removed, and the final answer set right."""
        edits: list[tuple[int, int, str]] = []
        for p, (a, op, b, r) in zip(parsed, steps):
            m = p.match
            if p.b != b:
                # the student's wording often repeats the operand before the equation ("Add 4: 2 + 4 = 6")
                line_start = text.rfind("\n", 0, m.start()) + 1
                prefix = text[line_start : m.start()]
                new_prefix = _replace_token(prefix, m["b"], fmt(b))
                if new_prefix != prefix:
                    edits.append((line_start, m.start(), new_prefix))
            for group, value in (("a", a), ("b", b), ("r", r)):
                if Fraction(m[group]) != value:
                    edits.append((*m.span(group), fmt(value)))
            if p.op != op and self.student_style:
                edits.append((*m.span("op"), self.student_style.ops[op]))
        # extra steps: drop their lines
        for p in parsed[len(steps) :]:
            ls = text.rfind("\n", 0, p.match.start()) + 1
            le = text.find("\n", p.match.end())
            edits.append((ls, len(text) if le < 0 else le + 1, ""))
        out = text
        for start, end, new in sorted(edits, key=lambda e: e[0], reverse=True):
            out = out[:start] + new + out[end:]
        if len(steps) > len(parsed):
            out = self._insert_missing(out, steps[len(parsed) :], len(parsed))
        if final is not None:
            span = _answer_span(out)
            if span and Fraction(out[span[0] : span[1]]) != final:
                out = out[: span[0]] + fmt(final) + out[span[1] :]
        return out

    def _insert_missing(self, text: str, missing: list[Step], done: int) -> str:
        """Missing steps, written as the student writes a step, just before its final-answer line."""
        style = self.student_style or self.oracle_style
        lines = [style.step_line(done + k + 1, fmt(a), op, fmt(b), fmt(r), self.items_word)
                 for k, (a, op, b, r) in enumerate(missing)]
        span = _answer_span(text)
        cut = text.rfind("\n", 0, span[0]) + 1 if span else len(text)
        block = "\n".join(lines) + "\n"
        if cut == len(text) and text and not text.endswith("\n"):
            block = "\n" + block.rstrip("\n")
        return text[:cut] + block + text[cut:]
