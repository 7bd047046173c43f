"""Answer extraction and hardened verification, including hostile model text."""


import pytest

from qup_assets.mathcore.extract import (
    answer_from_solution,
    extract_answer,
    gold_from_cell,
    last_boxed,
    normalize_answer,
)
from qup_assets.mathcore.verify import VerifierPool, prefilter


@pytest.mark.parametrize(
    "text,answer,method",
    [
        ("so \\boxed{42}.", "42", "boxed"),
        ("first \\boxed{1} then \\boxed{\\frac{a}{b}}", "\\frac{a}{b}", "boxed"),
        ("\\boxed{\\left\\{ 1, 2 \\right\\}}", "\\left\\{ 1, 2 \\right\\}", "boxed"),
        ("The answer is $\\frac{1}{2}$ apples.", "\\frac{1}{2}", "marker"),
        ("The answer is 17.", "17", "marker"),
        ("Step 3: 5 * 3 = 15\nFinal answer: 15", "15", "marker"),
        ("work...\n#### 1,234", "1234", "marker"),
        ("Answer: \\(7\\)", "7", "marker"),
        ("no answer here", None, "none"),
        ("\\boxed{unterminated", None, "none"),
        # lm-evaluation-harness minerva_math's format: the marker inside the marker is read through
        ("Final Answer: The final answer is 7.78. I hope it is correct.", "7.78", "marker"),
        ("Answer $9$", "9", "marker"),
        ("so the distance is\n\\[ 12 \\]", "12", "math_span"),
        ("the final answer for $ABCDEFGH$ is $12$", "12", "math_span"),
        ("We get $x = 3$, so the number of apples is $3$", "3", "math_span"),
        # boxes next to each other are one multi-part answer; an earlier boxed step is not part of it
        ("the roots are \\boxed{1} and \\boxed{2}", "1, 2", "boxed"),
        ("$\\boxed{1}$, $\\boxed{-3}$", "1, -3", "boxed"),
        ("step one gives \\boxed{3}; then we double it: \\boxed{6}", "6", "boxed"),
        # whichever comes last: a correction after a box wins over the box
        ("\\boxed{3}. Wait, I made an error. The answer is 4.", "4", "marker"),
        ("The answer is \\boxed{5}.", "5", "boxed"),
        # a marker's sentence: what follows its last " is ", else its last span or number
        ("Final Answer: The volume of $ABCDEFGH$ is 120. I hope it is correct.", "120", "marker"),
        ("Final Answer: Jane started growing Sphere 3 hours ago. I hope it is correct.", "3", "marker"),
        ("There are 12 distinct sequences. I hope it is correct.", "12", "marker"),
        ("The final answer is $12$ and $13$. I hope it is correct.", "12, 13", "marker"),
        ("Answer \\[ \n 9 \n \\]", "9", "marker"),
        ("Answer $ \n 9 \n $", None, "none"),  # inline math never spans lines
        ("we get $$x = 2$$ so. Therefore, the error increases by 100%.", "100%", "conclusion"),
        ("Therefore, we are done.", None, "none"),  # a conclusion without a number is no answer
        # parts of one answer that words ending in "and" divide; words that are not joiners divide two answers
        ("\\boxed{1} papers and \\boxed{2} bins", "1, 2", "boxed"),
        ("$\\boxed{(2, 2)} \\quad \\text{and} \\quad \\boxed{(6, 2)}$", "(2, 2), (6, 2)", "boxed"),
        ("\\boxed{1} no no no no no \\boxed{2}", "2", "boxed"),
        ("\\(y_1 = \\boxed{x+1}\\) and \\(y_2 = \\boxed{x-1}\\)", "x+1, x-1", "boxed"),
    ],
)
def test_extract_answer(text, answer, method):
    ex = extract_answer(text)
    assert (ex.answer, ex.method) == (answer, method)


@pytest.mark.parametrize(
    "text,boxed,standard,qwen_math",
    [
        ("so \\boxed{4}", ("4", "boxed"), ("4", "boxed"), ("4", "boxed")),
        ("The answer is 4.", (None, "none"), ("4", "marker"), ("4", "marker")),
        ("we get $x=2$, so", (None, "none"), ("x=2", "math_span"), ("x=2", "math_span")),
        # a base model's text with no marker: only qwen_math reads its last number, as Qwen2.5-Math's eval does
        ("P(A) = (1/2) / (3/4) = 2/3 is what Alice gets <|im_start|>user", (None, "none"), (None, "none"),
         ("2/3", "last_number")),
        ("the number is 1,000.99 m", (None, "none"), (None, "none"), ("1000.99", "last_number")),
        ("Soucis : 2,74 $ a..", (None, "none"), (None, "none"), ("2.74", "last_number")),
        ("-\\frac{10}{9}", (None, "none"), (None, "none"), ("-\\frac{10}{9}", "last_number")),
    ],
)
def test_answer_formats_setting(text, boxed, standard, qwen_math):
    for formats, want in (("boxed", boxed), ("standard", standard), ("qwen_math", qwen_math)):
        ex = extract_answer(text, formats)
        assert (ex.answer, ex.method) == want, formats


def test_gold_cells_are_read_as_a_dataset_row_holds_them():
    assert gold_from_cell("$\\boxed{1}\\boxed{2}$") == "1, 2"  # every part, not the last box
    assert gold_from_cell("0,111") == "0.111" and gold_from_cell("1,22") == "1.22"  # decimal commas
    assert gold_from_cell("3,000") == "3000" and gold_from_cell("1 000") == "1000"
    assert gold_from_cell("$-2,1$") == "-2,1"  # inside math delimiters a comma separates
    assert gold_from_cell("0.\\overline{3}") == "\\frac{1}{3}" and normalize_answer("1.2\\overline{45}") == "\\frac{137}{110}"
    solution = "We add the parts one by one, which gives the total of all parts. Therefore the answer is $42$."
    assert gold_from_cell(solution) == "42"


def test_equivalences_math_verify_needs_help_with(verifier):
    got = verifier.verify_many([("\\frac{1}{3}", "so $0.\\overline{3}$"), ("0.\\overline{3}", "\\boxed{\\frac13}"),
                                ("x>1", "\\boxed{(1,\\infty)}"), ("(1,\\infty)", "\\boxed{x>1}"),
                                ("[-2,7]", "\\boxed{-2 \\le x \\le 7}"), ("(1,\\infty)", "\\boxed{x<1}"),
                                ("\\frac{1}{3}", "\\boxed{0.\\overline{6}}")])
    assert [r.verdict for r in got] == ["correct"] * 5 + ["wrong"] * 2


def test_golds_are_parsed_on_their_own_and_code_like_golds_rejected(verifier):
    got = verifier.check_golds(["\\frac{1}{2}", "}{", "__import__('os').system('id')", "eval(1)", "", "12",
                                "os.system('rm')"])
    assert [r.verdict for r in got] == ["correct", "rejected", "rejected", "rejected", "rejected", "correct", "rejected"]
    assert got[1].reason == "gold answer could not be parsed"
    assert "looks like code" in got[2].reason and "looks like code" in got[6].reason


def test_boxed_with_deep_nesting_is_matched_without_recursion():
    # 10,000 levels would overflow any recursive matcher; the scan returns the whole balanced group.
    # (Its speed is measured in bench/bench_verify.py, not asserted here.)
    inner = "{" * 10_000 + "1" + "}" * 10_000
    assert last_boxed("\\boxed{" + inner + "} tail") == inner
    assert last_boxed("\\boxed{" + inner) is None  # unbalanced: no answer, not a crash


def test_normalize_and_solution_answers():
    assert normalize_answer("$\\boxed{12}$.") == "12"
    assert normalize_answer(" \\( 3,000 \\) ") == "3000"
    assert normalize_answer("0,111") == "0,111" and normalize_answer("-12,345,678") == "-12345678"
    assert normalize_answer("(1,2)") == "(1,2)"
    assert answer_from_solution("so $x=\\boxed{2\\sqrt{2}}$") == "2\\sqrt{2}"
    assert answer_from_solution("no box") is None


@pytest.mark.parametrize(
    "gold,pred,verdict",
    [
        ("42", "\\boxed{42}", "correct"),
        ("42", "\\boxed{41}", "wrong"),
        ("0.5", "The answer is $\\frac{2}{4}$.", "correct"),
        ("\\frac{3}{4}", "\\boxed{0.75}", "correct"),
        ("x+1", "\\boxed{1+x}", "correct"),
        ("2\\sqrt{2}", "\\boxed{\\sqrt{8}}", "correct"),
        ("(0,1)", "\\boxed{(0,1)}", "correct"),
        ("7", "I am not sure.", "no_answer"),
        ("", "\\boxed{1}", "rejected"),
    ],
)
def test_verify_verdicts(verifier, gold, pred, verdict):
    assert verifier.verify(gold, pred).verdict == verdict


@pytest.mark.parametrize(
    "answer,why",
    [
        ("9^9^9^9", "power tower"),
        ("2^{30^5}", "power tower"),
        ("10^{10^{10}}", "power tower"),
        ("2**99999999", "exponent larger"),
        ("100000!", "factorial"),
        ("1" * 400, "more than 300 digits"),
        ("{" * 50 + "1" + "}" * 50, "nested deeper"),
        ("x" * 600, "too long"),
    ],
)
def test_prefilter_rejects_bombs(answer, why):
    assert why in prefilter(answer, 512)


def test_prefilter_allows_ordinary_math():
    for ok in ["2^{10}", "x^2+1", "\\frac{1}{2}", "5!", "(1,2)", "10^{-3}", "e^{i\\pi}"]:
        assert prefilter(ok, 512) is None, ok


SENTINEL_PAYLOADS = [
    "\\boxed{__import__('os').system('touch {S}')}",
    "The answer is __import__('os').system('touch {S}')",
    "\\boxed{eval(\"open('{S}','w')\")}",
    "\\boxed{exec(\"open('{S}','w').write('x')\")}",
    "Answer: (lambda: __import__('subprocess').run(['touch','{S}']))()",
    "\\boxed{\\text{${__import__('os').system('touch {S}')}}}",
]


def test_payloads_never_execute(verifier, tmp_path):
    sentinel = tmp_path / "SENTINEL"
    pairs = [("3", p.replace("{S}", str(sentinel))) for p in SENTINEL_PAYLOADS]
    pairs += [(p.replace("{S}", str(sentinel)).replace("\\boxed{", "").rstrip("}"), "\\boxed{3}") for p in SENTINEL_PAYLOADS[:2]]
    results = verifier.verify_many(pairs)
    assert all(r.verdict != "correct" for r in results)
    assert not sentinel.exists()


def test_bombs_return_within_timeout_and_pool_keeps_answering(tmp_path):
    timeout = 2.0
    bombs = [
        "\\boxed{9^9^9^9}",
        "\\boxed{2^{30^5}}",
        "\\boxed{100000!}",
        "\\boxed{" + "7" * 1_000_000 + "}",
        "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}",
        b"\\boxed{\xff\xfe\xfd}",
        "\ud800\udfff \\boxed{\ud800}",
        # Reaches a worker (no pre-filter can see it): a huge but "legal" product.
        "\\boxed{" + "*".join(["99999999"] * 40) + "}",
    ]
    with VerifierPool(workers=2, timeout=timeout, max_answer_chars=4096) as pool:
        results = [pool.verify("3", bomb) for bomb in bombs]
        for bomb, res in zip(bombs, results):  # a recorded verdict with its reason for each, never an exception
            assert res.verdict in {"rejected", "timeout", "no_answer", "wrong"}, (bomb[:30], res)
            assert res.reason and not res.correct
        # the pre-filters stop the known bombs before any worker sees them, each with its own reason
        assert [r.reason for r in results[:5]] == [
            "nested exponent (power tower)", "nested exponent (power tower)", "factorial of a number larger than 1000",
            "answer too long (1000000 chars > 4096)", "answer too long (20001 chars > 4096)"]
        # A hanging comparison is killed, and the replaced worker still answers.
        res = pool.verify("3", "\\boxed{10^{10^{10}}}")
        assert res.verdict == "rejected"
        after = pool.verify_many([("\\frac{1}{2}", "\\boxed{0.5}")] * 4)
        assert all(r.verdict == "correct" for r in after)


def test_hung_worker_is_killed_and_replaced():
    """A comparison that never finishes (prefilter disabled) is a recorded timeout, and the pool recovers."""
    import qup_assets.mathcore.verify as v

    with VerifierPool(workers=1, timeout=1.5) as pool:
        old = v.prefilter
        v.prefilter = lambda answer, max_chars: None
        try:
            res = pool.verify("3", "\\boxed{9^{9^{9^{9}}}}")
        finally:
            v.prefilter = old
        assert res.verdict == "timeout" and res.reason == "no verdict within 1.5s (worker killed)"
        assert pool.restarts == 1
        assert pool.verify("\\frac{1}{2}", "\\boxed{0.5}").verdict == "correct"


def test_verification_never_runs_in_the_calling_process(monkeypatch):
    """math-verify work happens in spawned workers: broken in the caller, it still gives verdicts."""
    import math_verify

    def in_caller(*a, **k):
        raise AssertionError("math-verify was called in the calling process")

    monkeypatch.setattr(math_verify, "parse", in_caller)
    monkeypatch.setattr(math_verify, "verify", in_caller)
    with VerifierPool(workers=1, timeout=5.0) as pool:  # spawned: a fresh interpreter, unpatched
        assert pool.verify("\\frac{1}{2}", "\\boxed{0.5}").verdict == "correct"
        assert pool.verify("\\frac{1}{2}", "\\boxed{0.6}").verdict == "wrong"


def test_a_gold_with_several_boxes_keeps_every_part(verifier):
    assert answer_from_solution("so the solutions are $\\boxed{1}$ and $\\boxed{2}$.") == "1, 2"
    assert answer_from_solution("first $\\boxed{4}$ apples, then $x=\\boxed{2}$") == "2"  # words between: one answer
    assert answer_from_solution("\\boxed{1}\\boxed{2}") == "1, 2"
    got = verifier.verify_many([("7.78", "Final Answer: The final answer is 7.78. I hope it is correct."),
                                ("1, 2", "\\boxed{2} and \\boxed{1}"), ("1, 2", "\\boxed{1}")])
    assert [r.verdict for r in got] == ["correct", "correct", "wrong"]
