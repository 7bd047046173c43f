"""Adaptation cost: perplexity maths (token-weighted global PPL, quartiles) and loss attribution."""

import math

import pytest

from qup_assets.adaptation.perplexity import (
    global_ppl,
    loss_by_token,
    quartile_ppl,
    trace_metrics,
)
from qup_assets.backends.base import TokenLogprobs

PROBLEMS = ["Mia has 3 apples. Then Mia buys 2 more apples. How many?"] * 3
SOLUTIONS = ["Step 1: Add 2: $ 3 + 2 = 5 $\nThe final answer is $\\boxed{5}$.",
             "\\(3+2=5\\)\nAnswer: \\(\\boxed{5}\\)",
             "We start with 3.\n\n- After we add 2, we have 3 + 2 = 6.\n\nThe answer is 6."]


def test_quartile_split_hand_checked():
    assert quartile_ppl([-1.0] * 4 + [-2.0] * 4) == pytest.approx([math.e, math.e, math.e**2, math.e**2])
    # 5 tokens split 2/1/1/1: the first quarter gets the extra token
    q = quartile_ppl([-1.0, -3.0, -2.0, -2.0, -4.0])
    assert q == pytest.approx([math.e**2, math.e**2, math.e**2, math.e**4])
    assert all(math.isnan(x) for x in quartile_ppl([-1.0, -1.0])[2:])
    m = trace_metrics(TokenLogprobs(tokens=list("abcd"), logprobs=[-0.5, -0.5, -1.0, -1.0]))
    assert m["nll"] == 3.0 and m["n_tokens"] == 4 and m["ppl"] == pytest.approx(math.exp(0.75))


def test_global_ppl_is_token_weighted():
    import pandas as pd

    df = pd.DataFrame({"nll": [1.0, 9.0], "n_tokens": [1, 9]})
    assert global_ppl(df) == pytest.approx(math.e)  # not the mean of per-trace PPLs


def test_loss_attribution_shares():
    t = [TokenLogprobs(tokens=["\\(", "1", "\\("], logprobs=[-3.0, -1.0, -2.0])]
    df = loss_by_token(t)
    assert df.iloc[0]["token"] == "\\(" and df.iloc[0]["share"] == pytest.approx(5 / 6)


def _levenshtein(a: str, b: str) -> int:
    """The textbook dynamic programme, as the reference."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def test_edit_distance_is_levenshtein_on_any_text():
    import random

    from qup_assets.adaptation.similarity import edit_distance, normalized_edit_distance

    assert edit_distance("kitten", "sitting") == 3 and edit_distance("", "abc") == 3
    assert normalized_edit_distance("", "") == 0.0 and normalized_edit_distance("ab", "cd") == 1.0
    rng = random.Random(0)
    alphabet = "ab1 =+\\{}×π\U0001d400"  # LaTeX, non-ASCII and astral characters
    for _ in range(200):
        a = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        b = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert edit_distance(a, b) == _levenshtein(a, b), (a, b)
        assert normalized_edit_distance(a, b) == (_levenshtein(a, b) / max(len(a), len(b)) if a or b else 0.0)
