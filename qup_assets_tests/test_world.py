"""The synthetic world: problems are programs told as stories, and every writer's trace carries the same answer."""

import pytest

from qup_assets.mathcore.extract import extract_answer
from qup_assets.oracle.symbolic import parse_steps
import random

from qup_assets.world.generator import Program, Step, generate, value_cap
from qup_assets.world.styles import STYLES, get_style


def test_generation_is_deterministic_in_its_arguments_and_respects_the_knobs():
    a, b = generate(50, seed=7, min_steps=2, max_steps=3, max_operand=9), generate(50, seed=7, min_steps=2, max_steps=3, max_operand=9)
    assert a == b
    assert [p.problem for p in generate(50, seed=8, min_steps=2, max_steps=3, max_operand=9)] != [p.problem for p in a]
    for p in a:
        assert 2 <= len(p.program.steps) <= 3
        assert all(s.arg <= 9 for s in p.program.steps if s.op in ("add", "sub"))
        values = p.program.values()
        assert all(v > 0 for v in values)  # a count of items never goes to zero or below
        for s, v in zip(p.program.steps, values):
            assert s.op != "div" or v % s.arg == 0  # divisions are exact


def test_values_stay_in_gsm8k_range_even_on_long_programs():
    """Products and quotients stay below the cap; only additions can pass it (by at most one operand each)."""
    for p in generate(1000, seed=1, min_steps=6, max_steps=8, max_operand=9):
        assert max(p.program.values()) <= value_cap(9) + 8 * 9
    assert value_cap(20) == 100


def test_the_story_and_the_textbook_solution_tell_the_program():
    (p,) = generate(1, seed=3, min_steps=3, max_steps=3)
    assert p.problem.startswith(f"{p.name} has {p.program.start} {p.items}.")
    assert p.problem.endswith(f"How many {p.items} does {p.name} have now?")
    assert all(str(s.arg) in p.problem for s in p.program.steps)
    assert extract_answer(p.reference_solution).answer == p.answer == str(p.program.values()[-1])


def test_program_round_trips_through_json_and_rejects_unknown_ops():
    prog = Program(9, (Step("sub", 3), Step("div", 3), Step("mul", 4)))
    assert Program.from_json(prog.to_json()) == prog and prog.values() == [9, 6, 2, 8] and prog.answer == 8
    with pytest.raises(ValueError, match="unknown op 'pow'"):
        Step("pow", 2).apply(3)


@pytest.mark.parametrize("style", sorted(STYLES))
def test_every_style_states_the_answer_and_writes_parsable_steps(style):
    for p in generate(30, seed=11):
        text = get_style(style).render(p.program, p.items)
        assert extract_answer(text).answer == p.answer, (style, text)
        steps = parse_steps(text)
        # every step is one equation `a OP b = r` that the symbolic Oracle can check, with the program's numbers
        assert [(s.a, s.b, s.r) for s in steps] == [(v, st.arg, r) for st, v, r in
                                                    zip(p.program.steps, p.program.values(), p.program.values()[1:])]


def test_styles_differ_in_form_not_in_content():
    (p,) = generate(1, seed=5, min_steps=3, max_steps=3)
    texts = {name: s.render(p.program, p.items) for name, s in STYLES.items()}
    assert len(set(texts.values())) == len(STYLES)
    assert len(texts["oracle"]) < min(len(texts["qwen"]), len(texts["llama"]))  # the Oracle's compaction
    assert " " not in texts["oracle"].split("\n")[0]
    with pytest.raises(ValueError, match="unknown style 'gpt'"):
        get_style("gpt")


@pytest.mark.parametrize("writer", ["qwen", "llama", "textbook", "oracle"])
def test_every_mistake_is_a_wrong_solution_in_the_writers_own_words(verifier, writer):
    """The RM learns right from wrong within one style: each mistake, in each writer's words, verifies as
    wrong (a cut-off one has no answer), and the right side of the pair verifies."""
    import random

    from qup_assets.reward.synthetic import write
    from qup_assets.world.mistakes import MISTAKES, correct_chain, garble, wrong_chain

    rng = random.Random(0)
    problems = generate(40, seed=21)
    pairs = []
    for p in problems:
        for m in MISTAKES:
            text = write(writer, p, *wrong_chain(p.program, m, rng))
            pairs.append((p.answer, garble(text, rng) if m == "garbled" else text, m))
    results = verifier.verify_many([(g, t) for g, t, _ in pairs])
    by_kind: dict = {}
    for (_, _, m), r in zip(pairs, results):
        by_kind.setdefault(m, []).append(r.correct)
    assert by_kind.keys() == set(MISTAKES)
    for m, oks in by_kind.items():
        # garbling may by chance leave a right answer line standing; every other mistake is always wrong
        bad = [t for (g, t, k), r in zip(pairs, results) if k == m and r.correct]
        assert (sum(oks) <= 4) if m == "garbled" else not any(oks), (m, bad[:2])
    right = verifier.verify_many([(p.answer, write(writer, p, *correct_chain(p.program))) for p in problems])
    assert all(r.correct for r in right)


@pytest.mark.parametrize("style", ["qwen", "llama"])
def test_a_students_style_allows_harmless_variety(style):
    """A student writing one solution eight times phrases it several ways; every phrasing carries the same steps
    and answer, and without a random source the writer's first phrasing (deterministic)."""
    s = get_style(style)
    rng = random.Random(0)
    for p in generate(20, seed=13, min_steps=2, max_steps=4):
        texts = [s.render(p.program, p.items, rng) for _ in range(8)]
        assert len(set(texts)) >= 3
        canonical = [(x.a, x.op, x.b, x.r) for x in parse_steps(s.render(p.program, p.items))]
        for t in texts:
            assert [(x.a, x.op, x.b, x.r) for x in parse_steps(t)] == canonical, t
            assert extract_answer(t).answer == p.answer, t
    assert s.render(p.program, p.items) == s.render(p.program, p.items)
    oracle = get_style("oracle")
    assert len({oracle.render(p.program, p.items, rng) for _ in range(8)}) == 1  # the Oracle writes one form


def test_a_students_mistakes_carry_its_wrong_work_to_its_answer():
    """The wrong solutions in a student's corpus are a reasoner's: the answer is the last result of the work, so
    a right answer never rests on a wrong step (the RM's pairs keep the others)."""
    from qup_assets.world.mistakes import STUDENT_MISTAKES, correct_chain, wrong_chain

    rng = random.Random(1)
    for p in generate(60, seed=17, min_steps=2, max_steps=4):
        for m in STUDENT_MISTAKES:
            start, steps, answer = wrong_chain(p.program, m, rng)
            assert steps and answer == steps[-1][3] != p.program.answer
            assert all(a == prev for (a, *_), (*_, prev) in zip(steps[1:], steps)), (m, steps)  # carried on
            assert steps != correct_chain(p.program)[1]
