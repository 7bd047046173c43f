"""Answer checking against the labelled pairs of Math-Verify's own test suite (and the same answers in the
minerva_math and Qwen2.5-Math formats): qup agrees with the labels at least as often as math-verify called
directly, and never accepts a pair labelled not equal."""

import pytest

from qup_assets_tests.conformance import agreement, direct_verdicts, load_cases, qup_verdicts, scopes


@pytest.fixture(scope="module")
def cases():
    cases = load_cases()
    return cases, direct_verdicts(cases)


@pytest.mark.parametrize("formats", ["standard", "qwen_math"])
def test_qup_agrees_with_the_labels_at_least_as_often_as_math_verify(cases, formats):
    cases, direct = cases
    idx = scopes(cases)[formats]
    scoped = [cases[i] for i in idx]
    mine = qup_verdicts(scoped, formats)
    ours = agreement(scoped, mine)
    theirs = agreement(scoped, [direct[i] for i in idx])
    assert ours.n == len(scoped) > 200 and ours.not_equal > 30  # qup gives every case a verdict; not a handful
    assert ours.wrong_accepts == 0, f"qup {ours} | math-verify direct {theirs}"
    # on the cases math-verify decides (its crashes are no verdict), qup agrees at least as often
    decided = [j for j, i in enumerate(idx) if direct[i] is not None]
    on_same = agreement([scoped[j] for j in decided], [mine[j] for j in decided])
    assert on_same.agree >= theirs.agree, f"qup {on_same} | math-verify direct {theirs}"


def test_the_cases_cover_every_answer_format(cases):
    ids = [c["id"] for c in cases[0]]
    preds = [c["pred"] for c in cases[0]]
    assert sum(i.endswith("::minerva") for i in ids) > 80 and sum(i.endswith("::qwen") for i in ids) > 80
    assert any("\\boxed" in p and p.count("\\boxed") > 1 for p in preds)  # several boxes
    assert any("Final Answer:" in p and "::minerva" not in i for p, i in zip(preds, ids))  # models' own
