"""The synthetic world's problems: multi-step integer arithmetic word problems.

Each problem is a small program (a start value and 1-8 operations) told as a story
about one person and one kind of item. The program is the ground truth every other
part of the world uses: the gold answer, the textbook reference solution (the
NuminaMath analogue) here, and later the family styles and the symbolic Oracle.
Everything is deterministic in the seed.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

NAMES = ["Mia", "Leo", "Ava", "Noah", "Zoe", "Omar", "Lena", "Ivan", "Sara", "Ken", "Nina", "Raj", "Emma", "Tom"]
ITEMS = ["apples", "stickers", "marbles", "books", "coins", "pencils", "shells", "cards", "stamps", "cookies"]
OPS = ("add", "sub", "mul", "div")

_STORY = {
    "add": ["Then {name} buys {b} more {items}.", "A friend gives {name} {b} more {items}.", "Then {name} finds {b} more {items}."],
    "sub": ["Then {name} gives away {b} {items}.", "Then {name} loses {b} {items}.", "Then {name} uses {b} of the {items}."],
    "mul": ["Then the number of {items} {name} has becomes {b} times as large."],
    "div": ["Then {name} splits the {items} into {b} equal groups and keeps one group."],
}
_TEXTBOOK = {
    "add": "After getting {b} more, {name} has ${v} + {b} = {r}$ {items}.",
    "sub": "After giving up {b}, {name} has ${v} - {b} = {r}$ {items}.",
    "mul": "Growing {b} times gives ${v} \\times {b} = {r}$ {items}.",
    "div": "Splitting into {b} equal groups leaves ${v} \\div {b} = {r}$ {items}.",
}


@dataclass(frozen=True)
class Step:
    op: str
    arg: int

    def apply(self, v: int) -> int:
        if self.op == "add":
            return v + self.arg
        if self.op == "sub":
            return v - self.arg
        if self.op == "mul":
            return v * self.arg
        if self.op == "div":
            return v // self.arg
        raise ValueError(f"unknown op {self.op!r}")


@dataclass(frozen=True)
class Program:
    start: int
    steps: tuple[Step, ...]

    def values(self) -> list[int]:
        """Running values: [start, after step 1, ..., answer]."""
        out = [self.start]
        for s in self.steps:
            out.append(s.apply(out[-1]))
        return out

    @property
    def answer(self) -> int:
        return self.values()[-1]

    def to_json(self) -> str:
        return json.dumps({"start": self.start, "steps": [[s.op, s.arg] for s in self.steps]})

    @classmethod
    def from_json(cls, text: str) -> "Program":
        d = json.loads(text)
        return cls(int(d["start"]), tuple(Step(str(op), int(arg)) for op, arg in d["steps"]))


@dataclass(frozen=True)
class WorldProblem:
    program: Program
    name: str
    items: str
    problem: str
    reference_solution: str

    @property
    def answer(self) -> str:
        return str(self.program.answer)


def _pick_step(rng: random.Random, v: int, max_operand: int, cap: int) -> Step:
    """An operation that keeps the value a positive integer below cap (division only when exact)."""
    for _ in range(50):
        op = rng.choice(OPS)
        if op == "add":
            b = rng.randint(1, max_operand)
        elif op == "sub":
            if v <= 1:
                continue
            b = rng.randint(1, min(max_operand, v - 1))
        elif op == "mul":
            b = rng.randint(2, min(5, max_operand))
            if v * b > cap:
                continue
        else:
            divisors = [d for d in range(2, min(max_operand, 10, v // 2) + 1) if v % d == 0]
            if not divisors:
                continue
            b = rng.choice(divisors)
        return Step(op, b)
    return Step("add", rng.randint(1, max_operand))


def value_cap(max_operand: int) -> int:
    """The largest value a problem's running total may reach: GSM8K-scale arithmetic (below 100 for the default
    operands), the range a small student can learn to compute from its corpus."""
    return max(50, 5 * max_operand)


def make_program(rng: random.Random, n_steps: int, max_operand: int) -> Program:
    cap = value_cap(max_operand)
    v = rng.randint(2, max_operand)
    start, steps = v, []
    for _ in range(n_steps):
        step = _pick_step(rng, v, max_operand, cap)
        steps.append(step)
        v = step.apply(v)
    return Program(start, tuple(steps))


def tell(program: Program, name: str, items: str, rng: random.Random) -> str:
    lines = [f"{name} has {program.start} {items}."]
    for s in program.steps:
        lines.append(rng.choice(_STORY[s.op]).format(name=name, b=s.arg, items=items))
    lines.append(f"How many {items} does {name} have now?")
    return " ".join(lines)


def textbook_solution(program: Program, name: str, items: str) -> str:
    """The dataset's own reference CoT: full sentences, $...$ math, a final \\boxed{}."""
    values = program.values()
    steps = [(v, s.op, s.arg, r) for s, v, r in zip(program.steps, values, values[1:])]
    return textbook_steps(program.start, steps, program.answer, name, items)


def textbook_steps(start: int, steps: list[tuple], answer, name: str, items: str) -> str:
    """The textbook's wording of any chain of (a, op, b, r) steps, right or wrong; no answer line when
    `answer` is None (a solution cut off before its end)."""
    lines = [f"{name} starts with {start} {items}."]
    for v, op, b, r in steps:
        lines.append(_TEXTBOOK[op].format(name=name, b=b, v=v, r=r, items=items))
    if answer is not None:
        lines.append(f"Therefore, {name} has $\\boxed{{{answer}}}$ {items} in the end.")
    return "\n".join(lines)


def generate(size: int, seed: int, min_steps: int = 2, max_steps: int = 4, max_operand: int = 20) -> list[WorldProblem]:
    """`size` problems, deterministic in the arguments. Duplicates are possible; the pool removes them."""
    rng = random.Random(f"qup-world:{seed}:{min_steps}:{max_steps}:{max_operand}")
    out = []
    for _ in range(size):
        program = make_program(rng, rng.randint(min_steps, max_steps), max_operand)
        name, items = rng.choice(NAMES), rng.choice(ITEMS)
        out.append(WorldProblem(program, name, items, tell(program, name, items, rng), textbook_solution(program, name, items)))
    return out
