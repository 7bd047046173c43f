"""compat_selected: per problem, the verified candidate with the lowest per-token NLL under a real student."""

import numpy as np
import pandas as pd
import pytest

from qup_assets.adaptation.selection import (
    SELECTED_COLUMNS,
    select_lowest_nll,
    student_candidates,
    variant_candidates,
)
from qup_assets.backends.transformers_backend import TransformersBackend


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return TransformersBackend(tiny_model_dir, batch_size=8)


NATIVE = ["Step 1: 2 + 3 = 5.\nThe answer is \\boxed{5}.", "Step 1: 4 * 2 = 8.\nThe answer is \\boxed{8}."]
OTHER_SAMPLES = ["2 + 3 = 5. So the answer is \\boxed{5}.", "I think 4 * 2 = 8\n\n\n   \nThe answer is \\boxed{8}.\nextra"]


def _tables():
    native = pd.DataFrame({"model_family": "f", "problem_id": ["p1", "p2"], "prompt": ["What is 2 + 3?\n", "4 * 2?\n"],
                           "completion": NATIVE, "answer": ["5", "8"], "sample_idx": [0, 0], "correct": True,
                           "n_tokens": 10})
    samples = pd.DataFrame({"problem_id": ["p1", "p1", "p2", "p2", "p2"], "sample_idx": [0, 1, 0, 1, 2],
                            "completion": [NATIVE[0], OTHER_SAMPLES[0], NATIVE[1], OTHER_SAMPLES[1], "\\boxed{9}"],
                            "correct": [True, True, True, True, False]})
    refined = pd.DataFrame({"problem_id": ["p1", "p2"], "completion": ["2+3=5 \\boxed{5}", None],
                            "correct": [True, False]})
    return native, samples, {"oracle_refined": refined}


def _nll_per_token(lm, prompt: str, completion: str) -> float:
    """Mean NLL of the completion's tokens, computed apart from the product's scoring: one unpadded forward
    pass of the HF model over prompt + completion, log-softmax, the completion's positions."""
    import torch

    p = lm.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c = lm.tokenizer(completion, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = lm.model(input_ids=torch.tensor([p + c])).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    return -float(np.mean([logp[len(p) + i - 1, t].item() for i, t in enumerate(c)]))


def test_the_chosen_trace_is_the_least_surprising_verified_candidate(lm, tmp_path, verifier):
    native, samples, oracle = _tables()
    cands = pd.concat([student_candidates(native, samples, verifier), variant_candidates(oracle)], ignore_index=True)
    # the wrong sample and the failed rewrite are no candidates; the other sample is cleaned like native traces
    assert sorted(cands["selected_from"]) == ["native", "native", "oracle_refined", "student sample 1",
                                              "student sample 1"]
    assert "extra" not in " ".join(cands["completion"])
    out = select_lowest_nll(lm, tmp_path, "f", native, cands)
    assert list(out.columns) == SELECTED_COLUMNS and list(out["problem_id"]) == ["p1", "p2"]
    assert list(out["candidates"]) == [3, 2]
    prompts = dict(zip(native["problem_id"], native["prompt"]))
    for _, row in out.iterrows():
        mine = cands[cands["problem_id"] == row["problem_id"]]
        direct = [_nll_per_token(lm, prompts[row["problem_id"]], c) for c in mine["completion"]]
        assert row["nll_per_token"] == pytest.approx(min(direct), rel=1e-4)
        assert row["completion"] == list(mine["completion"])[int(np.argmin(direct))]
        assert row["correct"] and (row["selected_from"] != "native" or row["edit_distance"] == 0.0)
    native_nll = out["native_nll_per_token"].to_numpy()
    assert (out["nll_per_token"].to_numpy() <= native_nll + 1e-9).all()  # never worse than the native trace
    # the choice does not depend on the order the candidates come in
    again = select_lowest_nll(lm, tmp_path, "f", native, cands.iloc[::-1].reset_index(drop=True))
    pd.testing.assert_frame_equal(out, again)
