"""The mistakes students make in the synthetic world, as chains of steps a writer can render in any style.

A wrong solution is what a student's sampling produces, not a corrupted string: a slip whose wrong
value is carried on, a misread operand, the wrong operation for the story's verb, a skipped step,
a final answer that is not the work's, a solution cut off before its end, several slips at once, and
`garble` (text) for the broken writing a small model's sampling produces. Each comes back as
(start, steps, answer) with steps (a, op, b, r), so the student styles, the textbook and the Oracle
write the same mistake in their own words. Used to train the synthetic reward model on
correct-vs-wrong pairs within one writer's style, as real outcome RMs are trained.
"""

from __future__ import annotations

import random

from qup_assets.world.generator import OPS, Program, Step

MISTAKES = ("slip", "slips", "misread_operand", "wrong_operation", "skipped_step",
            "wrong_answer_line", "cut_off", "garbled")
# The mistakes of a student who reasons: the work is wrong somewhere and the answer follows from the work.
# A pretraining corpus of these teaches a model that its answer is its last result, so a slip it makes when
# sampling is carried to a wrong answer, not hidden behind a right one (ProcessBench, arXiv 2412.06559,
# found a wrong step in 3.5% of GSM8K solutions with a right answer). The others (an answer line that is not
# the work's, slips not carried on, cut-off and garbled text) stay for the reward model's preference pairs.
STUDENT_MISTAKES = ("slip", "misread_operand", "wrong_operation", "skipped_step")


def correct_chain(program: Program) -> tuple[int, list[tuple], int]:
    v = program.values()
    return program.start, [(a, s.op, s.arg, r) for s, a, r in zip(program.steps, v, v[1:])], program.answer


def _run(start: int, steps: list[Step]) -> list[tuple]:
    """Steps computed from `start` as the student would continue: integer division floors."""
    out, v = [], start
    for s in steps:
        r = s.apply(v) if s.op != "div" or s.arg else v
        out.append((v, s.op, s.arg, r))
        v = r
    return out


def _offset(rng: random.Random, value: int) -> int:
    """A plausible wrong number near `value` (never equal, never negative)."""
    for _ in range(20):
        x = value + rng.choice([-1, 1]) * rng.choice([1, 1, 2, 3, 5, 10])
        if x != value and x >= 0:
            return x
    return value + 1


def wrong_chain(program: Program, mistake: str, rng: random.Random) -> tuple[int, list[tuple], int | None]:
    """(start, steps, answer) of a solution with one `mistake`; its answer differs from the program's
    (None for a cut-off solution)."""
    start, steps, answer = correct_chain(program)
    k = rng.randrange(len(steps))
    if mistake == "slip":  # a wrong result, and the rest computed from it
        a, op, b, r = steps[k]
        wrong = _offset(rng, r)
        rest = _run(wrong, list(program.steps[k + 1:]))
        chain = steps[:k] + [(a, op, b, wrong)] + rest
    elif mistake == "slips":  # several results wrong, some far off, each either carried on or not
        chain, v = [], start
        for s in program.steps:
            r = s.apply(v)
            if rng.random() < 0.6:
                r = _offset(rng, r) if rng.random() < 0.5 else rng.randint(0, max(10, 3 * r))
            chain.append((v, s.op, s.arg, r))
            v = r if rng.random() < 0.7 else s.apply(v)
        if chain[-1][3] == answer:  # the slips were not carried to the end: the outcome is right
            return wrong_chain(program, "slip", rng)
        return start, chain, chain[-1][3]
    elif mistake == "misread_operand":
        s = program.steps[k]
        arg = _offset(rng, s.arg) or s.arg + 1
        new = list(program.steps)
        new[k] = Step(s.op, arg)
        chain = _run(start, new)
    elif mistake == "wrong_operation":
        s = program.steps[k]
        new = list(program.steps)
        new[k] = Step(rng.choice([o for o in OPS if o != s.op and (o != "div" or s.arg)]), s.arg)
        chain = _run(start, new)
    elif mistake == "skipped_step":
        if len(steps) == 1:
            return wrong_chain(program, "slip", rng)
        new = list(program.steps)
        del new[k]
        chain = _run(start, new)
    elif mistake == "wrong_answer_line":
        values = [start] + [r for *_, r in steps[:-1]]
        return start, steps, rng.choice([v for v in values if v != answer] or [_offset(rng, answer)])
    elif mistake == "garbled":  # rendered by the caller through `garble`; the chain itself has a slip
        return wrong_chain(program, "slip", rng)
    elif mistake == "cut_off":
        kept = steps[: max(1, k)] if len(steps) > 1 else []
        if kept and kept[-1][3] == answer:  # cut where the work already shows the answer: not wrong
            return wrong_chain(program, "slip", rng)
        return start, kept, None
    else:
        raise ValueError(f"unknown mistake {mistake!r}; known: {MISTAKES}")
    final = chain[-1][3] if chain else start
    if final == answer:  # the mistake cancelled out (e.g. x*1): not a wrong solution, try another
        return wrong_chain(program, "slip", rng)
    return start, chain, final


def garble(text: str, rng: random.Random) -> str:
    """Broken writing as a small model's sampling produces it: a piece of the text repeated or dropped
    elsewhere, digits run together."""
    if len(text) < 8:
        return text + text
    for _ in range(rng.randint(1, 3)):
        i, j = sorted(rng.sample(range(len(text)), 2))
        piece = text[i : min(j, i + 20)]
        k = rng.randrange(len(text))
        text = text[:k] + piece + text[k:] if rng.random() < 0.6 else text[:i] + text[min(j, i + 20):]
    return text
