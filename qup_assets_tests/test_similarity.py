"""Semantic preservation: the share of the native trace's established quantities a variant still establishes.

Fixtures are the synthetic world's own traces (the qwen, llama, Oracle and textbook styles): a rewrite in
another notation keeps the quantities, a wrong solution that reuses the same numbers does not."""

import json
import random
from fractions import Fraction

import pytest

from qup_assets.adaptation.similarity import Atom, information_atoms, semantic_preservation
from qup_assets.oracle.base import OracleItem
from qup_assets.oracle.symbolic import SymbolicOracle
from qup_assets.world.generator import Program, Step, generate, textbook_solution
from qup_assets.world.styles import get_style

PROGRAM = Program(12, (Step("add", 5), Step("mul", 2), Step("sub", 4), Step("div", 3)))  # 12 17 34 30 10
STYLE_NAMES = ("qwen", "llama", "oracle", "textbook")


def render(style: str, program: Program = PROGRAM) -> str:
    if style == "textbook":
        return textbook_solution(program, "Mia", "apples")
    return get_style(style).render(program, "apples")


def results(text: str) -> set[tuple]:
    return {(a.value, a.source) for a in information_atoms(text) if a.role == "result"}


# ------------------------------------------------------------------ 1. the native trace against itself


@pytest.mark.parametrize("style", STYLE_NAMES)
def test_native_against_itself_is_one(style):
    for program in [PROGRAM] + [p.program for p in generate(20, seed=3)]:
        text = render(style, program)
        atoms = information_atoms(text)
        assert len([a for a in atoms if a.role == "result"]) == len(program.steps)
        assert Atom("answer", Fraction(program.answer)) in atoms
        assert semantic_preservation(text, text) == 1.0


def test_atoms_are_the_quantities_each_step_establishes():
    assert results(render("qwen")) == {(17, "12+5"), (34, "17*2"), (30, "34-4"), (10, "30/3")}
    assert results(render("llama")) == results(render("oracle")) == results(render("textbook")) == results(render("qwen"))
    assert Atom("given", Fraction(12)) in information_atoms(render("llama"))  # "We start with 12 apples."
    assert Atom("given", Fraction(12)) in information_atoms(render("textbook"))  # "Mia starts with 12 apples."
    # + and * are commutative: operands in any order, any notation, are one atom
    assert results("5 + 12 = 17") == results("\\(12+5=17\\)") == results("$ 12 + 5 = 17 $ apples") == {(17, "12+5")}
    assert results("$2 \\cdot 17 = 34$") == results("17 × 2 = 34") == results("\\[17\\times 2=34\\]")
    assert results("$\\dfrac{30}{3} = 10$") == results("30 ÷ 3 = 10") == results("30 / 3 = 10") == {(10, "30/3")}
    assert results("the total is 1,000 + 500 = 1,500") == {(1500, "1000+500")}
    assert results("$ 9 - 3 = 6 $") == {(6, "9-3")} and results("6 \\div 3 = 2") == {(2, "6/3")}


def test_equation_chains_and_variables():
    # a chain establishes its rightmost number; its first computing side is the source
    (atom,) = [a for a in information_atoms("$3 \\times 4 + 2 = 12 + 2 = 14$") if a.role == "result"]
    assert (atom.value, atom.source, atom.alt) == (14, "(3*4)+2", "+(2,12)")
    # a numeric step matches by its operation on the evaluated operands: 12 + 2 = 14 is the same step
    assert semantic_preservation("$3 \\times 4 + 2 = 12 + 2 = 14$. The answer is 14.",
                                 "First 3 * 4 = 12, then 12 + 2 = 14.\nThe answer is 14.") == 1.0
    assert results("2x + 3 = 7") == {(7, "(2*x)+3")} and results("$y = 2x + 1$") == {(None, "y=(2*x)+1")}
    assert results("\\(x = \\boxed{17}\\)") == {(17, "x")}
    # cut out of a larger expression the sides are no equation: no 3 = 8, no 16 = 4
    assert results("2^3 = 8") == results("\\sqrt{16} = 4") == results("50\\% of 8 = 4") == set()


def test_answers_compare_by_value():
    assert semantic_preservation("The answer is 8.", "Answer: \\(\\boxed{8}\\)") == 1.0
    assert semantic_preservation("The answer is $\\frac{1}{2}$.", "The final answer is 0.5.") == 1.0
    assert semantic_preservation("The answer is 8.", "The answer is 9.") == 0.0
    assert information_atoms("The answer is $\\boxed{x + 1}$.") == [Atom("answer", "1+x")]  # canonical, not a value
    assert semantic_preservation("The answer is $\\boxed{x + 1}$.", "The answer is $1+x$.") == 1.0


def test_conventions_for_empty_texts():
    assert semantic_preservation("We think hard.", "anything") == 1.0  # nothing established, nothing lost
    assert semantic_preservation("", "") == 1.0 and information_atoms("") == []
    assert semantic_preservation(render("qwen"), "") == 0.0
    assert semantic_preservation(CORRECT, "The answer is 8.") == 0.25  # the answer alone: 1 of 4 quantities


# ------------------------------------------------------------------ 2. faithful rewrites in another notation


def test_the_same_program_in_another_style_keeps_everything():
    programs = [PROGRAM] + [p.program for p in generate(40, seed=7)]
    for program in programs:
        for native in STYLE_NAMES:
            for rewrite in STYLE_NAMES:
                score = semantic_preservation(render(native, program), render(rewrite, program))
                assert score >= 0.9, (native, rewrite, program)


def test_plain_text_rewritten_in_latex_with_operands_swapped():
    native = render("llama")
    rewrite = ("We start with 12 apples.\n- After we add 5, we have $5 + 12 = 17$ apples.\n"
               "- After we multiply by 2, we have $2 \\times 17 = 34$ apples.\n"
               "- After we take away 4, we have $34 - 4 = 30$ apples.\n"
               "- After we divide by 3, we have $\\frac{30}{3} = 10$ apples.\nThe answer is $\\boxed{10}$.")
    assert semantic_preservation(native, rewrite) >= 0.9
    compact = "\\(5+12=17\\) \\(17\\cdot2=34\\) \\(34-4=30\\) \\(30\\div 3=10\\)\nAnswer: \\(\\boxed{10}\\)"
    assert semantic_preservation(render("qwen"), compact) >= 0.9


# ------------------------------------------------------------------ 3. wrong solutions that reuse the numbers


def test_numbers_shuffled_into_wrong_equations_lose_the_quantities():
    native = render("qwen")
    shuffled = get_style("qwen").render_steps(
        [(12, "add", 17, 5), (5, "mul", 34, 2), (2, "sub", 30, 4), (4, "div", 10, 3)], 30, "apples")
    assert semantic_preservation(native, shuffled) <= 0.5
    prose = "We have 12, 5, 17, 2, 34, 4, 30, 3 and 10 apples in some order. The answer is 30."
    assert semantic_preservation(native, prose) <= 0.5


@pytest.mark.parametrize("style", ("qwen", "llama", "oracle"))
def test_a_slip_that_propagates_loses_what_follows(style):
    steps = [(12, "add", 5, 17), (17, "mul", 2, 35), (35, "sub", 4, 31), (31, "add", 3, 34)]  # 17*2 = 35
    right = Program(12, (Step("add", 5), Step("mul", 2), Step("sub", 4), Step("add", 3)))
    native, slipped = render(style, right), get_style(style).render_steps(steps, 34, "apples")
    assert semantic_preservation(native, slipped) <= 0.5  # only step 1 (and a stated start) survive
    assert semantic_preservation(native, get_style(style).render_steps(steps[:1], 33, "apples")) <= 0.5


# ------------------------------------------------------------------ 4. x-2 and junk


def test_a_subtraction_is_no_negative_number():
    for text in ("x - 2 = 5", "$x-2=5$", "\\(x - 2 = 5\\)"):
        assert results(text) == {(5, "x-2")}
        assert all(a.value != -2 for a in information_atoms(text))
    assert results("3 - 5 = -2") == {(-2, "3-5")}  # a sign where an operand is expected is a sign
    assert results("9 - -3 = 12") == {(12, "9-(-3)")}


def test_junk_yields_no_atoms_and_never_raises():
    rng = random.Random(0)
    junk = [
        "\\frac{1}{2 = \\boxed{3", "}{ = ) ( = ][", "$$$ = $", "\\frac{}{} = \\frac", "= = = =", "1 = 1 = 1",
        "(" * 10_000 + "1" + ")" * 10_000 + " = 1", "{" * 10_000 + " = " + "}" * 5_000, "- " * 5_000 + "1 = 1",
        "".join(rng.choice("0123456789+-*/=(){}[]\\frac$ x^.,") for _ in range(1_000_000)),  # 1 MB of it
        "12 + 5 = 17 " * 90_000, "9" * 1_000_000 + " = 1", "1=" * 500_000, "\x00\ud800 = 3 \U0001d400",
    ]
    for text in junk:
        atoms = information_atoms(text)
        assert isinstance(atoms, list) and all(isinstance(a, Atom) for a in atoms)
        for score in (semantic_preservation(text, render("qwen")), semantic_preservation(render("qwen"), text),
                      semantic_preservation(text, text[::-1])):
            assert 0.0 <= score <= 1.0
    assert results(junk[0]) == results(junk[6]) == set()


# ------------------------------------------------------------------ the Oracle's rewrites


CORRECT = ("Let's solve this step by step.\nStep 1: Subtract 3: $ 9 - 3 = 6 $\nStep 2: Divide by 3: $ 6 \\div 3 = 2 $\n"
           "Step 3: Multiply by 4: $ 2 \\times 4 = 8 $\nThe final answer is $\\boxed{8}$.")


def test_style_align_of_a_correct_trace_keeps_everything(verifier):
    program = json.dumps({"start": 9, "steps": [["sub", 3], ["div", 3], ["mul", 4]]})
    items = [OracleItem("p0", "Mia has 9 apples...", "8", CORRECT, program)]
    for i, p in enumerate(generate(10, seed=5)):
        items.append(OracleItem(f"p{i + 1}", p.problem, p.answer, render("qwen", p.program), p.program.to_json()))
    for item, r in zip(items, SymbolicOracle(verifier, student_style="qwen").run("style_align", items)):
        assert r.ok and semantic_preservation(item.native, r.completion) == 1.0


def test_the_llm_judge_reads_a_score_caches_it_and_never_guesses(tmp_path):
    """The paper profile's second opinion: the Oracle's backend scores each rewrite 0-10 through the versioned
    prompt and the response cache; a reply without a readable score is None, a pair without a rewrite too."""
    from qup_assets.backends.cache import ResponseCache
    from qup_assets.oracle.judge import judge_preservation, parse_score
    from qup_assets_tests.test_oracle import ScriptedLM

    assert parse_score("Same steps and answer. Score: 9") == 0.9
    assert parse_score("Score: 4/10, then Score: 7") == 0.7  # the last one, as the prompt asks it last
    assert parse_score("I would say high") is None and parse_score("Score: 42") is None and parse_score(None) is None
    lm = ScriptedLM(["It keeps everything. Score: 10", "Wrong numbers. Score: 2", "no idea"])
    natives = ["12 + 5 = 17", "12 + 5 = 17", "12 + 5 = 17", "12 + 5 = 17"]
    with ResponseCache(tmp_path, "judge") as cache:
        scores = judge_preservation(lm, cache, natives, ["\\(12+5=17\\)", "12 + 5 = 18", "x", None])
    assert scores == [1.0, 0.2, None, None] and lm.calls == 3
    assert "Solution A (the original):\n12 + 5 = 17" in lm.prompts[0] and "\\(12+5=17\\)" in lm.prompts[0]
    with ResponseCache(tmp_path, "judge") as cache:
        again = judge_preservation(lm, cache, natives, ["\\(12+5=17\\)", "12 + 5 = 18", "x", None])
    assert again == scores and lm.calls == 3  # all from the cache


def test_the_judge_is_only_for_an_llm_oracle():
    import pytest

    from qup_assets.study import Oracle

    with pytest.raises(ValueError, match="semantic_judge needs an 'llm' oracle"):
        Oracle(kind="symbolic", semantic_judge=True)
