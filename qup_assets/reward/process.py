"""A symbolic process reward model (PRM) for the synthetic world, as accurate as a published PRM.

The world's problems are programs, so every step of a student's trace has a true label. This scorer reads
the program back from the problem text, labels each step of a trace against it, then misjudges steps at the
per-step rates that reproduce a real PRM's ProcessBench GSM8K accuracies (Zheng et al. 2024,
arXiv:2412.06559) on the world's own solutions. The study gets a process RM whose mistakes have a known,
published size and which never rewards wording: every draw is keyed on a step's values, not its text.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from statistics import mean
from string import Formatter
from typing import NamedTuple, Sequence

from qup_assets.common import problem_id, stable_hash
from qup_assets.mathcore.extract import extract_answer
from qup_assets.oracle.symbolic import parse_steps
from qup_assets.world.generator import _STORY, Program, Step, WorldProblem, generate, textbook_steps
from qup_assets.world.mistakes import MISTAKES, correct_chain, wrong_chain
from qup_assets.world.styles import STYLES


class ProcessBenchScore(NamedTuple):
    """ProcessBench's three numbers, in %: accuracy on erroneous samples (earliest wrong step found
    exactly), on correct samples (every step judged correct), and their harmonic mean."""

    error: float
    correct: float
    f1: float


# ProcessBench GSM8K subset (the world's problems are GSM8K-like) for Qwen2.5-Math-PRM-7B / -72B, from Table 7
# of "The Lessons of Developing Process Reward Models in Mathematical Reasoning" (Zhang et al. 2025,
# arXiv:2501.07301). Checked against secondary copies only, the paper's own table was not readable here: the
# error / correct / F1 triples as reprinted in GenPRM's appendix Table 7 (Zhao et al. 2025, arXiv:2504.00891v2),
# and the F1s (82.4, 87.3) in a summary of 2501.07301 Table 7; each F1 is the harmonic mean of its pair.
PUBLISHED: dict[str, ProcessBenchScore] = {
    "qwen2.5-math-prm-7b": ProcessBenchScore(error=72.0, correct=96.4, f1=82.4),
    "qwen2.5-math-prm-72b": ProcessBenchScore(error=78.7, correct=97.9, f1=87.3),
}
MAX_RATE = 0.99  # a scaled error rate stays below 1: the scorer still sees something
THRESHOLD = 0.5  # ProcessBench's cut on P(step correct)
WRITERS = ("qwen", "llama", "oracle", "textbook")
LABELLED_MISTAKES = tuple(m for m in MISTAKES if m != "garbled")
# The default rates are calibrated once on this fixed set of world problems (default knobs: 2-4 steps);
# about fpr 0.009 / miss 0.27 for the 7B and fpr 0.005 / miss 0.20 for the 72B.
CALIBRATION_SEED = 20250113
CALIBRATION_PROBLEMS = 150
_ANSWER_METHODS = ("boxed", "marker", "conclusion")  # a final-answer line, not a trailing equation


# --- reading the problem back ---------------------------------------------------------------------------

# tell()'s opening and closing sentences; the step sentences come from generator._STORY itself.
_FRAME = re.compile(r"(?P<name>[^.?]+?) has (?P<start>\d+) (?P<items>[^.?]+?)\.(?P<body>.*?)\s*"
                    r"How many (?P=items) does (?P=name) have now\?", re.S)


def _story_regex(template: str, name: str, items: str) -> str:
    out = ""
    for literal, field, _, _ in Formatter().parse(template):
        out += re.escape(literal)
        if field == "b":
            out += r"(?P<b>\d+)"
        elif field in ("name", "items"):
            out += re.escape(name if field == "name" else items)
        elif field is not None:
            raise ValueError(f"story template {template!r} has an unknown field {field!r}")
    return out


@lru_cache(maxsize=256)
def _story_patterns(name: str, items: str) -> tuple[tuple[str, re.Pattern], ...]:
    return tuple((op, re.compile(_story_regex(t, name, items))) for op, ts in _STORY.items() for t in ts)


@lru_cache(maxsize=4096)
def parse_problem(text: str) -> Program | None:
    """The program a world problem tells (start value and steps), or None when `text` is not one."""
    if not isinstance(text, str):
        return None
    m = _FRAME.fullmatch(" ".join(text.split()))
    if m is None:
        return None
    body, pos, steps = m["body"], 0, []
    patterns = _story_patterns(m["name"], m["items"])
    while pos < len(body):
        if body[pos] == " ":
            pos += 1
            continue
        for op, pattern in patterns:
            s = pattern.match(body, pos)
            if s:
                steps.append(Step(op, int(s["b"])))
                pos = s.end()
                break
        else:
            return None
    return Program(int(m["start"]), tuple(steps))


# --- the true label of each step ------------------------------------------------------------------------

def final_answer(solution: str) -> Fraction | str | None:
    """The trace's final-answer line's value; None without one (a trailing equation is not an answer)."""
    ex = extract_answer(solution)
    if ex.answer is None or ex.method not in _ANSWER_METHODS:
        return None
    try:
        return Fraction(ex.answer.replace(",", "").strip())
    except (ValueError, ZeroDivisionError):
        return ex.answer


def _steps(program: Program, solution: str) -> list[tuple[tuple, bool]]:
    """(identity, truth) of each step: the parsed equations in order, one wrong step per missing one, then
    the answer. The identity holds a step's values only, never its wording, so draws keyed on it are
    the same in every writer's style."""
    expected = [(Fraction(a), op, Fraction(b), Fraction(r)) for a, op, b, r in correct_chain(program)[1]]
    out = []
    for i, p in enumerate(parse_steps(solution or "")):
        step = (p.a, p.op, p.b, p.r)
        out.append((("step", i, *map(str, step)), i < len(expected) and step == expected[i]))
    for i in range(len(out), len(expected)):
        out.append((("missing", i), False))
    answer = final_answer(solution or "")
    out.append((("answer", len(out), str(answer)), answer is not None and answer == program.answer))
    return out


def step_labels(program: Program, solution: str) -> list[bool]:
    """Whether each step of `solution` is right in the world's grammar: the story's operand, the previous
    result carried, exact arithmetic; the final answer line is the last step."""
    return [truth for _, truth in _steps(program, solution)]


def _uniforms(*key) -> tuple[float, float]:
    h = stable_hash("symbolic-prm", *key)
    return int(h[:13], 16) / 16**13, int(h[13:26], 16) / 16**13


# --- the scorer -----------------------------------------------------------------------------------------

class SymbolicProcessRM:
    """Judges each step against the program, misjudging as a published PRM does: a right step is called
    wrong with probability `fpr`, a wrong one right with probability `miss` (both times `error_scale`).
    A step's value is a P(step correct) as a PRM gives: in [0.8, 1] when judged right, [0, 0.2] when judged
    wrong. A solution's score is the minimum over its steps, one of the usual PRM aggregations: the
    Qwen2.5-Math-PRM paper (arXiv:2501.07301) defaults to the product and reports min within 0.5 point of it
    in Best-of-8 (its Table 13, read from a summary); min keeps the score on a step's scale, above 0.8 only
    when every step was judged right.
    Only for synthetic problems: any other problem raises ValueError."""

    VERSION = "1"

    def __init__(self, error_scale: float = 1.0, verifier: str = "qwen2.5-math-prm-7b", seed: int = 0):
        if verifier not in PUBLISHED:
            raise ValueError(f"unknown verifier {verifier!r}; known: {sorted(PUBLISHED)}")
        if not error_scale >= 0:
            raise ValueError(f"error_scale must be >= 0, got {error_scale!r}")
        self.verifier, self.error_scale, self.seed = verifier, float(error_scale), seed
        fpr, miss = default_rates(verifier)
        self.fpr, self.miss = min(fpr * error_scale, MAX_RATE), min(miss * error_scale, MAX_RATE)
        # the calibrated rates are in it too: a change of the world that moves them invalidates cached scores
        self.fingerprint = stable_hash(type(self).__name__, self.VERSION, verifier, self.error_scale, seed,
                                       round(fpr, 9), round(miss, 9))

    def step_probabilities(self, problem: str, solution: str) -> list[float]:
        program = parse_problem(problem)
        if program is None:
            raise ValueError(f"SymbolicProcessRM scores only the synthetic world's problems; this is not one: "
                             f"{str(problem)[:120]!r}")
        pid, out = problem_id(problem), []
        for identity, truth in _steps(program, solution):
            u, v = _uniforms(self.seed, pid, identity)
            judged_right = truth != (u < (self.fpr if truth else self.miss))
            out.append(0.8 + 0.2 * v if judged_right else 0.2 * v)
        return out

    def score(self, problems: Sequence[str], solutions: Sequence[str]) -> list[float]:
        if len(problems) != len(solutions):
            raise ValueError(f"{len(problems)} problems but {len(solutions)} solutions")
        return [min(self.step_probabilities(p, s)) for p, s in zip(problems, solutions)]


# --- calibration to ProcessBench ------------------------------------------------------------------------

@dataclass(frozen=True)
class Labelled:
    problem: str
    solution: str
    writer: str
    mistake: str | None  # None: a correct solution
    labels: tuple[bool, ...]


def write(writer: str, p: WorldProblem, start: int, steps: list[tuple], answer) -> str:
    if writer == "textbook":
        return textbook_steps(start, steps, answer, p.name, p.items)
    return STYLES[writer].render_steps(steps, answer, p.items)


def labelled_set(problems: Sequence[WorldProblem], rng: random.Random) -> list[Labelled]:
    """ProcessBench-like samples of the world: each problem's correct solution and one of each mistake
    (garbled text aside), each in every writer's style, with every step's true label."""
    out = []
    for p in problems:
        right = correct_chain(p.program)
        chains = [(None, right)]
        for mistake in LABELLED_MISTAKES:
            wrong = wrong_chain(p.program, mistake, rng)
            if wrong != right:
                chains.append((mistake, wrong))
        for mistake, chain in chains:
            for writer in WRITERS:
                text = write(writer, p, *chain)
                out.append(Labelled(p.problem, text, writer, mistake, tuple(step_labels(p.program, text))))
    return out


def calibrate(acc_error: float, acc_correct: float, chains: Sequence[Sequence[bool]]) -> tuple[float, float]:
    """Per-step (fpr, miss) that give these ProcessBench accuracies (in %) on samples with these true step
    labels, steps misjudged independently: P(correct sample all judged right) = E[(1-fpr)^n] (solved for
    fpr by bisection), P(earliest error found) = E[(1-fpr)^(k-1)] (1-miss) (then linear in miss)."""
    ns = [len(c) for c in chains if all(c)]
    before = [list(c).index(False) for c in chains if not all(c)]  # k - 1
    if not ns or not before:
        raise ValueError("calibration needs both correct and erroneous samples")
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mean((1 - mid) ** n for n in ns) > acc_correct / 100 else (lo, mid)
    fpr = (lo + hi) / 2
    miss = 1 - acc_error / 100 / mean((1 - fpr) ** k for k in before)
    return fpr, min(max(miss, 0.0), MAX_RATE)


@lru_cache(maxsize=1)
def _calibration_labels() -> tuple[tuple[bool, ...], ...]:
    problems = generate(CALIBRATION_PROBLEMS, seed=CALIBRATION_SEED)
    return tuple(x.labels for x in labelled_set(problems, random.Random(CALIBRATION_SEED)))


@lru_cache(maxsize=None)
def default_rates(verifier: str) -> tuple[float, float]:
    """(fpr, miss) of `verifier` on the world's default problems, from its published GSM8K accuracies."""
    pub = PUBLISHED[verifier]
    return calibrate(pub.error, pub.correct, _calibration_labels())


def processbench_f1(rm: SymbolicProcessRM, labelled: Sequence[Labelled]) -> ProcessBenchScore:
    """The RM measured as ProcessBench measures a PRM: its predicted error is the earliest step whose
    P(correct) is below 0.5 (none: all correct), right iff it is the true earliest wrong step."""
    hits: dict[bool, list[bool]] = {True: [], False: []}
    for x in labelled:
        probs = rm.step_probabilities(x.problem, x.solution)
        predicted = next((i for i, p in enumerate(probs) if p < THRESHOLD), -1)
        truth = x.labels.index(False) if False in x.labels else -1
        hits[truth == -1].append(predicted == truth)
    error = 100.0 * sum(hits[False]) / max(1, len(hits[False]))
    correct = 100.0 * sum(hits[True]) / max(1, len(hits[True]))
    f1 = 2 * error * correct / (error + correct) if error + correct else 0.0
    return ProcessBenchScore(error, correct, f1)


def process_rm_record(rm, knobs: dict, problems: int = 100) -> tuple[dict, str]:
    """What the reward_model asset records of a study's symbolic process RM (study.RewardModel): its rates, and
    its ProcessBench figures measured on a fresh labelled set of the study's kind of problems beside the
    published ones (as a markdown table)."""
    scorer = SymbolicProcessRM(error_scale=rm.error_scale, verifier=rm.verifier)
    seed = int(stable_hash("process-rm-check", rm.name)[:8], 16)
    measured = processbench_f1(scorer, labelled_set(generate(problems, seed, **knobs), random.Random(seed)))
    published = PUBLISHED[rm.verifier]
    record = {"kind": rm.kind, "path": None, "fingerprint": scorer.fingerprint, "verifier": rm.verifier,
              "error_scale": rm.error_scale, "fpr": scorer.fpr, "miss": scorer.miss, "f1": measured.f1,
              "published_f1": published.f1}
    rows = [("published (ProcessBench GSM8K)", published), (f"measured here (error_scale {rm.error_scale:g})", measured)]
    table = "| | erroneous acc. | correct acc. | F1 |\n|---|---|---|---|\n" + "\n".join(
        f"| {name} | {x.error:.1f} | {x.correct:.1f} | {x.f1:.1f} |" for name, x in rows)
    return record, f"{rm.verifier}, per-step false alarm {scorer.fpr:.4f}, miss {scorer.miss:.3f}\n\n{table}"
