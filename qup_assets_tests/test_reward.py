"""Reward-model backends on tiny real HF models built here, and the synthetic RM."""

import math
import textwrap

import pandas as pd
import pytest

from qup_assets.reward.scorers import (
    OutcomeRM,
    ProcessRM,
    SequenceClassifierRM,
    open_reward_model,
)

PROBLEMS = ["Mia has 3 apples. Then Mia buys 2 more apples. How many?"] * 3
SOLUTIONS = ["Step 1: Add 2: $ 3 + 2 = 5 $\nThe final answer is $\\boxed{5}$.",
             "\\(3+2=5\\)\nAnswer: \\(\\boxed{5}\\)",
             "We start with 3.\n\n- After we add 2, we have 3 + 2 = 6.\n\nThe answer is 6."]


def _tiny_config(cls_config, tok, **kw):
    return cls_config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=1, num_key_value_heads=1, pad_token_id=tok.pad_token_id, **kw)


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_sequence_classifier_rm_scores_do_not_depend_on_batching(tok, tmp_path):
    import torch
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

    torch.manual_seed(0)
    Qwen2ForSequenceClassification(_tiny_config(Qwen2Config, tok, num_labels=1)).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    rm = open_reward_model("sequence_classifier", tmp_path, batch_size=3)
    assert isinstance(rm, SequenceClassifierRM)
    together = rm.score(PROBLEMS, SOLUTIONS)
    alone = [rm.score([p], [s])[0] for p, s in zip(PROBLEMS, SOLUTIONS)]
    assert together == pytest.approx(alone, abs=1e-5)
    assert len(set(round(x, 6) for x in together)) == 3


REMOTE_CODE = textwrap.dedent('''
    import torch
    from transformers import PretrainedConfig, PreTrainedModel

    class TinyRMConfig(PretrainedConfig):
        model_type = "tiny_rm"
        def __init__(self, vocab_size=1000, hidden_size=16, **kw):
            self.vocab_size, self.hidden_size = vocab_size, hidden_size
            super().__init__(**kw)

    class TinyRM(PreTrainedModel):
        config_class = TinyRMConfig
        def __init__(self, config):
            super().__init__(config)
            self.emb = torch.nn.Embedding(config.vocab_size, config.hidden_size)
            self.head = torch.nn.Linear(config.hidden_size, 1)
            self.post_init()
        def forward(self, input_ids, attention_mask=None, **kw):
            h = self.emb(input_ids) * attention_mask[..., None]
            return (self.head(h.sum(1) / attention_mask.sum(1, keepdim=True)),)
''')


def test_outcome_rm_through_automodel_needs_trust_remote_code(tok, tmp_path):
    import json

    (tmp_path / "tiny_rm.py").write_text(REMOTE_CODE)
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("tiny_rm_local", tmp_path / "tiny_rm.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["tiny_rm_local"] = mod
    spec.loader.exec_module(mod)
    model = mod.TinyRM(mod.TinyRMConfig(vocab_size=len(tok)))
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "tiny_rm.TinyRMConfig", "AutoModel": "tiny_rm.TinyRM"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(Exception, match="trust_remote_code"):
        OutcomeRM(tmp_path)  # off unless the study turns it on for this model
    rm = open_reward_model("qwen_outcome", tmp_path, trust_remote_code=True)
    scores = rm.score(PROBLEMS, SOLUTIONS)
    assert len(scores) == 3 and all(math.isfinite(s) for s in scores)


def test_process_rm_scores_each_step_and_aggregates(tok, tmp_path):
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForTokenClassification

    tok = AutoTokenizer.from_pretrained(tok.name_or_path)
    tok.add_special_tokens({"additional_special_tokens": ["<extra_0>"]})
    torch.manual_seed(0)
    Qwen2ForTokenClassification(_tiny_config(Qwen2Config, tok, num_labels=2)).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    assert ProcessRM.split_steps(SOLUTIONS[2]) == ["We start with 3.", "- After we add 2, we have 3 + 2 = 6.", "The answer is 6."]
    assert ProcessRM.split_steps(SOLUTIONS[0]) == SOLUTIONS[0].split("\n")
    by = {agg: open_reward_model("process", tmp_path, aggregation=agg).score(PROBLEMS, SOLUTIONS) for agg in ("min", "mean", "last")}
    for i in range(3):
        assert 0 <= by["min"][i] <= by["mean"][i] <= 1 and 0 <= by["last"][i] <= 1
    text = ProcessRM(tmp_path)._texts(PROBLEMS[:1], SOLUTIONS[2:])[0]
    assert text.count("<extra_0>") == 3


def test_synthetic_rm_pairs_teach_correctness_within_a_style_and_a_smaller_style_taste(tmp_path):
    """Most pairs are right vs wrong in one writer's words; a fifth are both right, the Oracle's style
    preferred 70% of the time; labels are noisy as annotators are. The RM trains, saves as an HF folder and
    scores through the same scorer as Skywork's."""
    from qup_assets.reward.synthetic import CORRECTNESS_AGREEMENT, STYLE_AGREEMENT, preference_pairs, train_reward_model
    from qup_assets.world.generator import generate
    from qup_assets.world.mistakes import MISTAKES

    problems = generate(2000, seed=3)
    pairs = preference_pairs(problems, seed=0)
    style = [p for p in pairs if p["kind"] == "style"]
    right_wrong = [p for p in pairs if p["kind"] != "style"]
    assert 0.15 < len(style) / len(pairs) < 0.25 and {p["kind"] for p in right_wrong} == set(MISTAKES)
    assert {p["writer"] for p in right_wrong} == {"qwen", "llama", "textbook", "oracle"}
    assert all(p["writer"].startswith("oracle vs ") for p in style)
    flips = {k: sum(p["flipped"] for p in ps) / len(ps) for k, ps in (("style", style), ("rw", right_wrong))}
    assert abs(flips["style"] - (1 - STYLE_AGREEMENT)) < 0.05 and abs(flips["rw"] - (1 - CORRECTNESS_AGREEMENT)) < 0.02
    assert all(p["chosen"] != p["rejected"] for p in pairs)

    rep = train_reward_model(problems[:300], tmp_path / "rm", steps=20, pretrain_steps=20, hidden_size=32,
                             num_layers=1, log=lambda m: None)
    assert set(rep.heldout_by_kind) <= set(MISTAKES) | {"style"}
    scores = SequenceClassifierRM(tmp_path / "rm").score([p.problem for p in problems[:4]], ["x"] * 4)
    assert len(scores) == 4 and all(isinstance(x, float) for x in scores)
    # The held-out accuracy is against the truth (the better side), not the noisy label: recomputed here
    # through the scorer every study uses, on the same held-out pairs (the first tenth, at least 20).
    held = preference_pairs(problems[:300], seed=0)[: max(20, 300 // 10)]
    rm = SequenceClassifierRM(tmp_path / "rm")
    better, worse = (rm.score([p["problem"] for p in held], [p[side] for p in held]) for side in ("better", "worse"))
    wins = [b > w for b, w in zip(better, worse)]
    assert rep.heldout_pair_accuracy == pytest.approx(sum(wins) / len(wins), abs=1.5 / len(wins))
    labels = [p["chosen"] == p["better"] for p in held]
    assert not all(labels) and rep.pairs == len(preference_pairs(problems[:300], seed=0))


def test_rm_diagnostics_measure_separation_with_an_interval_and_warn_at_chance():
    import numpy as np

    from qup_assets.reward.diagnostics import auc, diagnose, diagnostic_samples, separation

    assert auc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    assert auc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 0.0
    assert auc(np.array([1.0]), np.array([1.0])) == 0.5  # ties count half
    rng = np.random.default_rng(0)
    p, lo, hi = separation(rng.normal(1, 1, 200), rng.normal(0, 1, 200), 300)
    assert lo < p < hi and 0.65 < p < 0.85  # two unit normals one sd apart: AUC 0.76
    samples = pd.DataFrame({"problem_id": [f"p{i // 4}" for i in range(40)], "correct": [i % 4 == 0 for i in range(40)],
                            "verdict": ["correct" if i % 4 == 0 else ("no_answer" if i % 4 == 1 else "wrong")
                                        for i in range(40)],
                            "finish_reason": ["length" if i % 4 == 3 else "stop" for i in range(40)],
                            "completion": [str(i) for i in range(40)]})
    picked = diagnostic_samples(samples, 5, 0)
    wrong = picked[~picked["correct"]]
    assert picked["correct"].sum() == 5 and len(wrong) == 5 and wrong["problem_id"].is_unique
    assert set(wrong["verdict"]) == {"wrong"} and set(wrong["finish_reason"]) == {"stop"}  # judged, stopped normally
    chance = diagnose("f", "rm", pd.Series(rng.normal(0, 1, 100)), pd.Series([i % 2 == 0 for i in range(100)]), 200, 0)
    assert "cannot tell" in chance["warning"]
    none_wrong = diagnose("f", "rm", pd.Series([1.0, 2.0]), pd.Series([True, True]), 200, 0)
    assert "not measurable" in none_wrong["warning"]


def test_nemotron_rm_reads_token_zeros_logit_after_the_conversation(tok, tmp_path):
    """Llama-3.1-Nemotron-70B-Reward-HF's rule (its model card: the first generated position's logit of
    token 0), on a tiny causal LM; the same score alone or in a batch of different lengths."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from qup_assets.reward.scorers import NemotronRM, rm_text

    torch.manual_seed(0)
    Qwen2ForCausalLM(_tiny_config(Qwen2Config, tok)).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    rm = open_reward_model("nemotron", tmp_path, batch_size=3)
    assert isinstance(rm, NemotronRM)
    scores = rm.score(PROBLEMS, SOLUTIONS)
    model = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    for p, s, got in zip(PROBLEMS, SOLUTIONS, scores):
        ids = tok(rm_text(tok, p, s), return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            assert got == pytest.approx(model(input_ids=ids).logits[0, -1, 0].item(), abs=1e-4)
    assert [rm.score([p], [s])[0] for p, s in zip(PROBLEMS, SOLUTIONS)] == pytest.approx(scores, abs=1e-5)


def test_batches_follow_a_token_budget_longest_first(tok, tmp_path):
    import torch
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

    torch.manual_seed(0)
    Qwen2ForSequenceClassification(_tiny_config(Qwen2Config, tok, num_labels=1)).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    rm = open_reward_model("sequence_classifier", tmp_path, batch_size=8, max_batch_tokens=800)
    # 400 + 390 fill one batch (2 x 400 padded tokens); the short ones share the next
    assert rm.batches([10, 400, 30, 390, 5]) == [[1, 3], [2, 0, 4]]
    assert open_reward_model("sequence_classifier", tmp_path, batch_size=2, max_batch_tokens=10**6).batches(
        [1, 2, 3]) == [[2, 1], [0]]
    long = [s * 30 for s in SOLUTIONS]  # mixed lengths, scored in budgeted batches, returned in order
    assert rm.score(PROBLEMS * 2, SOLUTIONS + long) == pytest.approx(
        [rm.score([p], [s])[0] for p, s in zip(PROBLEMS * 2, SOLUTIONS + long)], abs=1e-5)


def test_qwen_math_rms_get_their_model_cards_system_turn_and_it_is_in_the_cache_key(tok, tmp_path):
    from qup_assets.backends.fingerprint import folder_fingerprint
    from qup_assets.reward.scorers import QWEN_MATH_SYSTEM

    test_outcome_rm_through_automodel_needs_trust_remote_code(tok, tmp_path)  # builds the remote-code RM here
    rm = open_reward_model("qwen_outcome", tmp_path, trust_remote_code=True)
    assert rm.system == QWEN_MATH_SYSTEM and QWEN_MATH_SYSTEM in rm._texts(PROBLEMS[:1], SOLUTIONS[:1])[0]
    own = open_reward_model("qwen_outcome", tmp_path, trust_remote_code=True, system="Judge the solution.")
    assert "Judge the solution." in own._texts(PROBLEMS[:1], SOLUTIONS[:1])[0]
    assert len({rm.fingerprint, own.fingerprint, folder_fingerprint(tmp_path)}) == 3
