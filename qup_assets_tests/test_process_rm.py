"""The symbolic process RM: reads world problems back, labels each step against the program, and misjudges
steps at rates calibrated to a published PRM's ProcessBench GSM8K accuracies, the same in every style."""

import random
from collections import defaultdict

import pytest

from qup_assets.reward.process import (CALIBRATION_SEED, PUBLISHED, WRITERS, SymbolicProcessRM, labelled_set,
                                       parse_problem, processbench_f1, step_labels, write)
from qup_assets.world.generator import Program, Step, generate
from qup_assets.world.mistakes import correct_chain, garble, wrong_chain
from qup_assets.world.styles import STYLES

FRESH_SEED = 4242  # neither the calibration set's seed nor any default


def _pairwise_win_rate(labelled, scores) -> float:
    """P(correct > wrong) over (correct, wrong) pairs of the same problem and writer, ties counted half."""
    groups = defaultdict(lambda: ([], []))
    for x, s in zip(labelled, scores):
        groups[(x.problem, x.writer)][x.mistake is not None].append(s)
    wins = [1.0 if c > w else 0.5 if c == w else 0.0
            for right, wrong in groups.values() for c in right for w in wrong]
    return sum(wins) / len(wins)


@pytest.mark.parametrize("knobs", [dict(seed=1), dict(seed=2, min_steps=1, max_steps=8, max_operand=9),
                                   dict(seed=3, min_steps=5, max_steps=8, max_operand=50)])
def test_parse_problem_reads_back_the_program_of_generated_problems(knobs):
    for p in generate(200, **knobs):
        assert parse_problem(p.problem) == p.program
        assert parse_problem(p.problem.replace(". ", ".\n")) == p.program  # line breaks are only spacing


def test_a_text_that_is_not_a_world_problem_is_refused_clearly():
    gsm8k = "Natalia sold clips to 48 of her friends in April, and then half as many in May. How many in all?"
    (p,) = generate(1, seed=5)
    near = p.problem.replace("How many", "Then the cat eats 2 fish. How many", 1)
    for text in (gsm8k, near, "", p.problem.replace("have now?", "have?")):
        assert parse_problem(text) is None
    with pytest.raises(ValueError, match="Natalia sold clips"):
        SymbolicProcessRM().score([gsm8k], ["The answer is 72."])


def test_step_labels_follow_the_worlds_grammar():
    program = Program(7, (Step("add", 5), Step("mul", 3)))  # 7 + 5 = 12, 12 * 3 = 36
    qwen = STYLES["qwen"]
    assert step_labels(program, qwen.render_steps([(7, "add", 5, 12), (12, "mul", 3, 36)], 36)) == [True] * 3
    # a slip carried on: the slip, every later step (its left operand is not the true value) and the answer
    assert step_labels(program, qwen.render_steps([(7, "add", 5, 13), (13, "mul", 3, 39)], 39)) == [False, False, False]
    # cut off after step 1: the missing step and the missing answer are wrong
    assert step_labels(program, qwen.render_steps([(7, "add", 5, 12)], None)) == [True, False, False]
    # an extra step is wrong, and so is the answer it leads to
    extra = [(7, "add", 5, 12), (12, "mul", 3, 36), (36, "add", 1, 37)]
    assert step_labels(program, qwen.render_steps(extra, 37)) == [True, True, False, False]
    # no equation at all: every step wrong
    assert step_labels(program, "I think it is a lot of apples.") == [False, False, False]


def test_exact_judge_ranks_every_correct_solution_above_every_wrong_one_in_every_style():
    problems = generate(60, seed=FRESH_SEED)
    labelled = labelled_set(problems, random.Random(FRESH_SEED))
    assert {"cut_off", "wrong_answer_line"} <= {x.mistake for x in labelled}
    assert {x.writer for x in labelled} == set(WRITERS)
    rm = SymbolicProcessRM(error_scale=0)
    scores = rm.score([x.problem for x in labelled], [x.solution for x in labelled])
    right = [s for x, s in zip(labelled, scores) if x.mistake is None]
    wrong = [s for x, s in zip(labelled, scores) if x.mistake is not None]
    assert min(right) >= 0.8 and max(wrong) <= 0.2
    assert _pairwise_win_rate(labelled, scores) == 1.0
    # garbled writing scores low too
    rng = random.Random(1)
    garbled = [garble(write("qwen", p, *wrong_chain(p.program, "garbled", rng)), rng) for p in problems]
    assert max(rm.score([p.problem for p in problems], garbled)) <= 0.2


@pytest.mark.parametrize("error_scale", [1.0, 3.0])
def test_the_same_chain_scores_the_same_in_every_writers_style(error_scale):
    labelled = labelled_set(generate(80, seed=FRESH_SEED + 1), random.Random(FRESH_SEED + 1))
    problems, solutions = [x.problem for x in labelled], [x.solution for x in labelled]
    scores = SymbolicProcessRM(error_scale=error_scale, seed=3).score(problems, solutions)
    by_chain = defaultdict(dict)
    for x, s in zip(labelled, scores):
        by_chain[(x.problem, x.mistake)][x.writer] = s
    assert all(set(v) == set(WRITERS) for v in by_chain.values())
    assert max(max(v.values()) - min(v.values()) for v in by_chain.values()) <= 0.02
    # steps were misjudged, so this is more than the exact judge agreeing with itself
    exact = SymbolicProcessRM(error_scale=0, seed=3).score(problems, solutions)
    assert sum((s > 0.5) != (e > 0.5) for s, e in zip(scores, exact)) >= 20


def test_processbench_f1_matches_the_published_gsm8k_figures_on_a_fresh_set():
    assert FRESH_SEED != CALIBRATION_SEED
    labelled = labelled_set(generate(300, seed=FRESH_SEED), random.Random(FRESH_SEED))
    for verifier, published in PUBLISHED.items():
        measured = processbench_f1(SymbolicProcessRM(verifier=verifier), labelled)
        assert abs(measured.f1 - published.f1) <= 3, (verifier, measured, published)
        assert abs(measured.error - published.error) <= 5 and abs(measured.correct - published.correct) <= 3
        doubled = processbench_f1(SymbolicProcessRM(error_scale=2, verifier=verifier), labelled)
        assert doubled.f1 < measured.f1 - 5
    assert processbench_f1(SymbolicProcessRM(error_scale=0), labelled).f1 == 100


def test_calibrated_judge_still_prefers_correct_solutions():
    labelled = labelled_set(generate(200, seed=FRESH_SEED + 2), random.Random(FRESH_SEED + 2))
    scores = SymbolicProcessRM().score([x.problem for x in labelled], [x.solution for x in labelled])
    assert _pairwise_win_rate(labelled, scores) >= 0.85


def test_scores_are_deterministic_and_the_fingerprint_names_the_configuration():
    (p,) = generate(1, seed=9)
    solution = STYLES["llama"].render_steps(correct_chain(p.program)[1], p.program.answer, p.items)
    a, b = SymbolicProcessRM(seed=1), SymbolicProcessRM(seed=1)
    assert a.fingerprint == b.fingerprint and a.score([p.problem], [solution]) == b.score([p.problem], [solution])
    others = [SymbolicProcessRM(seed=2), SymbolicProcessRM(error_scale=2, seed=1),
              SymbolicProcessRM(verifier="qwen2.5-math-prm-72b", seed=1)]
    assert len({a.fingerprint, *(o.fingerprint for o in others)}) == 4
    assert 0 < a.fpr < a.miss < 1 and SymbolicProcessRM(error_scale=0).fpr == 0
    with pytest.raises(ValueError, match="unknown verifier"):
        SymbolicProcessRM(verifier="gpt-4o")
