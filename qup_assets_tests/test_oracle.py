"""The symbolic Oracle's three tasks, the LLM Oracle's parsing/retries/caching, and hostile Oracle output."""

import json
import random

import pytest

from qup_assets.adaptation.similarity import normalized_edit_distance
from qup_assets.backends.base import Completion
from qup_assets.backends.cache import ResponseCache
from qup_assets.oracle.base import OracleItem, OracleResult
from qup_assets.oracle.llm import LLMOracle, parse_output
from qup_assets.oracle.symbolic import SymbolicOracle, parse_steps
from qup_assets.world.generator import generate
from qup_assets.world.styles import get_style

PROGRAM = json.dumps({"start": 9, "steps": [["sub", 3], ["div", 3], ["mul", 4]]})  # 9 -> 6 -> 2 -> 8
CORRECT = ("Let's solve this step by step.\nStep 1: Subtract 3: $ 9 - 3 = 6 $\nStep 2: Divide by 3: $ 6 \\div 3 = 2 $\n"
           "Step 3: Multiply by 4: $ 2 \\times 4 = 8 $\nThe final answer is $\\boxed{8}$.")
SLIP = CORRECT.replace("$ 9 - 3 = 6 $", "$ 9 - 3 = 7 $").replace("$ 6 \\div 3", "$ 7 \\div 3")


def _item(native, program=PROGRAM, answer="8"):
    return OracleItem("p1", "Mia has 9 apples...", answer, native, program)


@pytest.fixture
def oracle(verifier):
    return SymbolicOracle(verifier, student_style="qwen")


def test_synthesized_traces_verify_everywhere(verifier, oracle):
    problems = generate(200, seed=11)
    items = [OracleItem(str(i), p.problem, p.answer, None, p.program.to_json()) for i, p in enumerate(problems)]
    results = oracle.run("synthesize", items)
    assert all(r.ok for r in results)
    assert results[0].completion.startswith("\\(") and " " not in results[0].completion.split("\n")[0]


def test_style_align_leaves_a_correct_trace_unchanged(oracle):
    (r,) = oracle.run("style_align", [_item(CORRECT)])
    assert r.ok and r.completion == CORRECT and r.repaired_steps == 0


def test_style_align_changes_only_the_wrong_step_and_what_follows(oracle):
    (r,) = oracle.run("style_align", [_item(SLIP)])
    assert r.ok and r.completion == CORRECT and r.repaired_steps == 2
    changed = [i for i, (a, b) in enumerate(zip(SLIP.split("\n"), r.completion.split("\n"))) if a != b]
    assert changed == [1, 2]  # step 1 (the slip) and step 2 (which used its value); nothing else
    assert normalized_edit_distance(SLIP, r.completion) < 0.02


def test_style_align_writes_missing_steps_in_the_students_format(oracle):
    short = CORRECT.replace("Step 3: Multiply by 4: $ 2 \\times 4 = 8 $\n", "")
    (r,) = oracle.run("style_align", [_item(short)])
    assert r.ok and r.completion == CORRECT


def test_refine_polishes_every_trace_keeping_the_students_steps_and_words(verifier):
    """Refine = the Oracle's polish of the student's trace, on every trace: every repair made, the student's steps,
    order and words kept, the conclusion in the Oracle's answer line; so it is never the student's text
    (Style-Aligned) nor the Oracle's own solution (Synthesized), and it lies between them."""
    oracle = SymbolicOracle(verifier, student_style="qwen")
    (r,) = oracle.run("refine", [_item(SLIP)])
    assert r.ok and r.repaired_steps == 2 and r.reason == "polished, repaired"
    assert r.completion == CORRECT.replace("The final answer is $\\boxed{8}$.", "Answer: \\(\\boxed{8}\\)")

    rng = random.Random(3)
    for style in ("qwen", "llama"):
        oracle = SymbolicOracle(verifier, student_style=style)
        problems = generate(120, seed=12)
        items = [OracleItem(str(i), p.problem, p.answer, get_style(style).render(p.program, p.items, rng),
                            p.program.to_json()) for i, p in enumerate(problems)]
        refined, synth, aligned = (oracle.run(task, items) for task in ("refine", "synthesize", "style_align"))
        assert all(x.ok for x in refined)
        assert oracle.run("refine", items) == refined
        for it, x, s_, a in zip(items, refined, synth, aligned):
            assert x.completion not in (s_.completion, a.completion)
            assert [(p.a, p.op, p.b, p.r) for p in parse_steps(x.completion)] == \
                [(p.a, p.op, p.b, p.r) for p in parse_steps(it.native)]

        def mean_distance(results):
            return sum(normalized_edit_distance(it.native, x.completion) for it, x in zip(items, results)) / len(items)

        assert mean_distance(aligned) < mean_distance(refined) < mean_distance(synth)


def test_without_a_program_arithmetic_is_checked_and_propagated(verifier):
    text = "We have 4 * 5 = 21.\nThen 21 + 3 = 24.\nThe answer is 23."
    (r,) = SymbolicOracle(verifier).run("style_align", [_item(text, program=None, answer="23")])
    assert r.ok and r.completion == "We have 4 * 5 = 20.\nThen 20 + 3 = 23.\nThe answer is 23."


def test_llama_style_and_parsing_never_evaluates(verifier):
    text = get_style("llama").render(generate(1, seed=5)[0].program, "coins")
    assert parse_steps(text)
    hostile = "__import__('os').system('x') = 3 and 2 + 2 = 5"
    assert [(s.a, s.op, s.b, s.r) for s in parse_steps(hostile)] == [(2, "add", 2, 5)]


# ------------------------------------------------------------------ LLM oracle


def test_llm_refine_means_what_the_symbolic_refine_means_and_its_version_is_recorded(tmp_path, verifier):
    """refine v2 asks for a polish into the Oracle's own style (v1's "minimal intervention" could hand a
    correct trace back); each task's prompt version is in the Oracle's name, so traces record it."""
    from qup_assets.oracle.llm import PROMPT_VERSIONS, prompt_template

    assert PROMPT_VERSIONS["refine"] == "v2"
    refine = prompt_template("refine")
    assert "your own clear, rigorous style" in refine and "already correct: polish it anyway" in refine
    assert "minimal intervention" in prompt_template("refine", "v1")  # old versions stay readable
    with ResponseCache(tmp_path, "x") as cache:
        oracle = LLMOracle(ScriptedLM(["<solution>\\boxed{8}</solution>"]), cache, verifier, "m")
        assert "refine.v2" in oracle.name and "style_align.v1" in oracle.name
        assert "polish" in oracle.prompt("refine", _item(CORRECT))


def test_parse_output_tolerates_preambles_fences_and_tags():
    assert parse_output("Sure! Here is the corrected solution:\n<solution>\nx = 2\n\\boxed{2}\n</solution>") == "x = 2\n\\boxed{2}"
    assert parse_output("Here is the repaired solution:\n```latex\n2+2=4, \\boxed{4}\n```") == "2+2=4, \\boxed{4}"
    assert parse_output("Here's the corrected solution:\n2+2=4\n\\boxed{4}") == "2+2=4\n\\boxed{4}"
    assert parse_output("<solution>unterminated \\boxed{4}") == "unterminated \\boxed{4}"
    assert parse_output("") is None and parse_output("x" * 30_000) is None


class ScriptedLM:
    """A backend whose replies are given by the test (to feed malformed Oracle output); it records what it saw.

    `replies` is a list (one per call, the last repeated) or a dict from the request's seed to the reply.
    """

    fingerprint = "scripted"

    def __init__(self, replies):
        self.replies, self.calls, self.prompts, self.seeds = replies, 0, [], []

    def sample(self, requests, params, progress=None):
        out = []
        for r in requests:
            self.prompts.append(r.prompt)
            self.seeds.append(params.seed)
            if isinstance(self.replies, dict):
                text = self.replies.get(params.seed, "no answer")
            else:
                text = self.replies[min(self.calls, len(self.replies) - 1)]
            out.append(Completion(text, 5, "stop"))
            self.calls += 1
        return out


@pytest.mark.parametrize(
    "replies,reason",
    [
        (["I cannot solve this."], "answer no_answer: no final answer found"),
        (["<solution>" + "9" * 50_000 + "</solution>"], "unparsable reply"),
        (["<solution>\\boxed{__import__('os').system('touch SENTINEL')}</solution>"], "answer wrong"),
        (["<solution>\\boxed{9^9^9^9}</solution>"], "answer rejected: nested exponent"),
    ],
)
def test_malformed_oracle_output_is_a_recorded_failure(verifier, tmp_path, monkeypatch, replies, reason):
    monkeypatch.chdir(tmp_path)
    with ResponseCache(tmp_path, "c") as cache:
        oracle = LLMOracle(ScriptedLM(replies), cache, verifier, "scripted", max_retries=1)
        (r,) = oracle.run("refine", [_item(SLIP)])
    assert not r.ok and r.completion is None and r.attempts == 2
    assert r.reason.startswith("failed after 2 attempts (") and reason in r.reason, r.reason
    assert not (tmp_path / "SENTINEL").exists()


def test_a_failed_attempt_is_retried_with_a_fresh_seed(verifier, tmp_path):
    # Only seed 1 gives a verified answer: a retry that reused seed 0 would fail every time.
    lm = ScriptedLM({0: "<solution>So \\boxed{7}.</solution>", 1: "<solution>So \\boxed{8}.</solution>"})
    with ResponseCache(tmp_path, "c") as cache:
        (r,) = LLMOracle(lm, cache, verifier, "scripted", max_retries=2).run("synthesize", [_item(None)])
    assert r.ok and r.attempts == 2 and r.completion == "So \\boxed{8}." and r.reason == "verified"
    assert lm.seeds == [0, 1]  # one request per attempt, each with its own seed; none after success


def test_the_rendered_prompt_carries_the_problem_and_the_trace(verifier, tmp_path):
    items = [OracleItem("p1", "Mia has 9 apples. She gives away 3.", "8", SLIP, PROGRAM)]
    for kind in ("refine", "style_align", "synthesize"):
        lm = ScriptedLM(["<solution>\\boxed{8}</solution>"])
        with ResponseCache(tmp_path / kind, "c") as cache:
            LLMOracle(lm, cache, verifier, "scripted", max_retries=0,
                      chat_format=lambda t: f"<|user|>{t}<|assistant|>").run(kind, items)
        (prompt,) = lm.prompts
        assert prompt.startswith("<|user|>") and prompt.endswith("<|assistant|>")  # the chat format wraps it
        assert "Mia has 9 apples. She gives away 3." in prompt
        assert "{problem}" not in prompt and "{trace}" not in prompt
        # refine and style_align rewrite the student's trace; synthesize writes from the problem alone
        assert (SLIP in prompt) == (kind != "synthesize"), kind
        assert "strictly preserve" in prompt.lower() if kind == "style_align" else True


def test_llm_oracle_with_a_real_tiny_model_is_cached(verifier, tiny_model_dir, tmp_path):
    from qup_assets.backends.transformers_backend import TransformersBackend

    lm = TransformersBackend(tiny_model_dir)
    chat = lambda text: lm.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                         add_generation_prompt=True)
    items = [_item(SLIP), _item(CORRECT)]
    with ResponseCache(tmp_path, "o") as cache:
        first = LLMOracle(lm, cache, verifier, "tiny", max_tokens=48, max_retries=1, chat_format=chat).run("style_align", items)
        assert cache.misses == sum(r.attempts for r in first)  # one generation per attempt, whatever succeeded
    with ResponseCache(tmp_path, "o") as cache:
        again = LLMOracle(lm, cache, verifier, "tiny", max_tokens=48, max_retries=1, chat_format=chat).run("style_align", items)
        assert cache.misses == 0 and cache.hits == sum(r.attempts for r in first) and again == first
    for r in first:  # a verified rewrite, or a failure that names its last verdict
        assert (r.ok and r.reason == "verified") or (r.attempts == 2 and "failed after 2 attempts (" in r.reason
                                                     and ("answer " in r.reason or "unparsable" in r.reason)), r


def test_a_prompt_longer_than_the_oracles_context_is_a_recorded_failure_without_retries(verifier, tmp_path):
    class Refusing(ScriptedLM):
        def sample(self, requests, params, progress=None):
            super().sample(requests, params, progress)
            return [Completion("", 0, "prompt_too_long") for _ in requests]

    lm = Refusing(["unused"])
    with ResponseCache(tmp_path, "c") as cache:
        (r,) = LLMOracle(lm, cache, verifier, "scripted", max_retries=2).run("refine", [_item(SLIP)])
    assert not r.ok and r.attempts == 1 and "longer than the Oracle's context" in r.reason
    assert lm.seeds == [0]  # no retry: another seed cannot make the prompt fit


class _CountingOracle:
    """Verifies the items whose problem id is in `good`; counts what it was asked to rewrite."""

    name = "counting"

    def __init__(self, good: set[str]):
        self.good, self.asked = good, 0

    def run(self, task, items):
        self.asked += len(items)
        return [OracleResult("ok", True, "verified") if it.problem_id in self.good else
                OracleResult(None, False, "failed after 3 attempts (answer wrong: 5 vs 7)" if i % 2 else
                             "failed after 3 attempts (answer no_answer: no final answer found)", 3)
                for i, it in enumerate(items)]


def test_an_oracle_that_fails_its_first_chunk_stops_before_the_rest():
    from qup_assets.oracle.traces import OracleCollapsed, rewrite

    items = [OracleItem(f"p{i}", "q", "1", "t") for i in range(100)]
    collapsed = _CountingOracle(good={"p0"})
    with pytest.raises(OracleCollapsed) as e:
        rewrite(collapsed, "style_align", items, "style_aligned", first=10, min_share=0.2, hint="Check the prompt.")
    assert str(e.value) == ("style_aligned: 1/10 verified; 5 x answer wrong, 4 x no final answer found: the first 10 of "
                            "100 rewrites below oracle.min_verified_share = 0.2, so the Oracle stopped there. "
                            "Check the prompt.")
    assert collapsed.asked == 10  # the other 90 were never sent
    fine = _CountingOracle(good={f"p{i}" for i in range(0, 100, 4)})  # 25%: above the threshold, everything runs
    out = rewrite(fine, "refine", items, "oracle_refined", first=10, min_share=0.2)
    assert len(out) == 100 and fine.asked == 100 and [r.ok for r in out] == [i % 4 == 0 for i in range(100)]
