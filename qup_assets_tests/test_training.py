"""Fine-tuning (TRL SFT and DFT) and evaluation (Avg@k, bootstrap CIs) on real tiny HF models."""

import json

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from qup_assets.backends.base import SamplingParams
from qup_assets.backends.cache import ResponseCache
from qup_assets.backends.prompting import render_prompt
from qup_assets.backends.transformers_backend import TransformersBackend
from qup_assets.evaluation.metrics import MACRO, bootstrap_ci, eval_table
from qup_assets.sampling.native import sample_native
from qup_assets.study import Prompt, Training
from qup_assets.training.finetune import (
    FinetuneJob,
    OverlengthError,
    build_trainer,
    build_training_set,
    finetune,
    stops_with_eos,
)
from qup_assets.world.generator import generate
from qup_assets.world.styles import STYLES


def _data(n=48, seed=3):
    probs = generate(n, seed, min_steps=1, max_steps=2, max_operand=9)
    ids = [f"p{i}" for i in range(n)]
    return ids, [p.problem for p in probs], [STYLES["qwen"].render(p.program, p.items) for p in probs], probs


def _tok(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _job(model_dir, out, objective="sft", **kw):
    args = dict(base_model=str(model_dir), out_dir=str(out), objective=objective, lr=2e-3, batch_size=8,
                micro_batch_size=8, epochs=1, max_length=512, seed=0)
    return FinetuneJob(**{**args, **kw})


def _trainer(model_dir, records, objective, tmp_path):
    """The product's own trainer for a job (build_trainer is what finetune() trains with)."""
    return build_trainer(_job(model_dir, tmp_path / objective, objective), records, log=lambda m: None)


def test_dft_loss_is_token_loss_times_detached_probability(tiny_model_dir, tmp_path):
    import torch

    ids, problems, comps, _ = _data(8)
    data = build_training_set(_tok(tiny_model_dir), Prompt(), ids, problems, comps, 512)
    losses = {}
    for objective in ("sft", "dft"):
        trainer = _trainer(tiny_model_dir, data.records, objective, tmp_path)
        batch = next(iter(trainer.get_train_dataloader()))
        trainer.model.eval()
        with torch.no_grad():
            losses[objective] = float(trainer.compute_loss(trainer.model, dict(batch)))
            logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)[mask]
    nll = float(-logp.mean())
    dft = float((-logp * logp.exp()).sum() / mask.sum())
    assert losses["sft"] == pytest.approx(nll, rel=1e-4)
    assert losses["dft"] == pytest.approx(dft, rel=1e-4)
    assert losses["dft"] < losses["sft"]  # each token's loss is scaled by its probability, which is below 1


def test_training_sequences_end_with_eos_and_mask_the_prompt(tiny_model_dir, tmp_path):
    tok = _tok(tiny_model_dir)
    ids, problems, comps, _ = _data(6)
    for prompt in (Prompt(), Prompt(format="plain", template="qwen-boxed")):
        data = build_training_set(tok, prompt, ids, problems, comps, 512)
        trainer = _trainer(tiny_model_dir, data.records, "sft", tmp_path)
        for row, problem in zip(trainer.train_dataset, problems):
            trained = [lab != -100 for lab in row["labels"]]
            completion = [t for t, m in zip(row["input_ids"], trained) if m]
            assert tok.eos_token_id in completion[-2:], prompt.format  # eos (then the template's newline)
            prompt_ids = row["input_ids"][: trained.index(True)]
            assert tok.decode(prompt_ids) == render_prompt(tok, prompt, problem)  # the prompt is never trained on


def test_overlength_traces_are_dropped_with_a_count_or_refused(tiny_model_dir):
    tok = _tok(tiny_model_dir)
    ids, problems, comps, _ = _data(10)
    comps[3] = comps[3] + " step" * 600
    data = build_training_set(tok, Prompt(), ids, problems, comps, 256)
    assert data.dropped == ["p3"] and len(data.records) == 9 and data.drop_rate == pytest.approx(0.1)
    assert all(n <= 256 for n in data.lengths)
    with pytest.raises(OverlengthError, match="1 of 10 traces are longer than training.max_length=256"):
        build_training_set(tok, Prompt(), ids, problems, comps, 256, on_overlength="fail")


def test_finetuned_checkpoint_loads_generates_and_stops(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    tok = _tok(tiny_model_dir)
    ids, problems, comps, _ = _data(48)
    data = build_training_set(tok, Prompt(), ids, problems, comps, 512)
    res = finetune(_job(tiny_model_dir, tmp_path / "ck", "sft", epochs=10, lr=1e-2), data.records, log=lambda m: None)
    assert res.steps == 60 and res.loss_curve[-1][1] < res.loss_curve[0][1] / 2
    assert json.loads((tmp_path / "ck" / "qup_training.json").read_text())["job"]["objective"] == "sft"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left behind
    model = AutoModelForCausalLM.from_pretrained(res.path)
    assert model.config.eos_token_id == tok.eos_token_id
    prompts = [render_prompt(tok, Prompt(), p) for p in problems[:8]]
    # The barely pretrained base never stops within 200 tokens; fine-tuned with eos in the labels, it does.
    assert stops_with_eos(str(tiny_model_dir), prompts, max_tokens=200) < 0.25
    assert stops_with_eos(res.path, prompts, max_tokens=200) >= 0.75


def test_a_finished_identical_job_is_reused_and_a_changed_one_is_not(tiny_model_dir, tmp_path):
    from dataclasses import replace

    from qup_assets.training.finetune import finished_result, records_hash

    ids, problems, comps, _ = _data(8)
    data = build_training_set(_tok(tiny_model_dir), Prompt(), ids, problems, comps, 512)
    job = _job(tiny_model_dir, tmp_path / "ck", data_hash=records_hash(data.records, "fp"))
    assert finished_result(job) is None  # nothing trained yet
    res = finetune(job, data.records, log=lambda m: None)
    again = finished_result(job)
    assert again is not None and again.train_loss == res.train_loss and again.loss_curve == res.loss_curve
    other = replace(job, data_hash=records_hash(data.records[:-1], "fp"))
    assert finished_result(other) is None  # other data: retrain
    assert finished_result(replace(job, lr=1e-4)) is None  # other hyper-parameters: retrain


def test_lora_checkpoint_is_merged_into_a_plain_model_folder(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    ids, problems, comps, _ = _data(16)
    data = build_training_set(_tok(tiny_model_dir), Prompt(), ids, problems, comps, 512)
    res = finetune(_job(tiny_model_dir, tmp_path / "lora", lora={"r": 4, "alpha": 8, "dropout": 0.0}, lr=1e-2),
                   data.records, log=lambda m: None)
    assert not (tmp_path / "lora" / "adapter_config.json").exists()  # merged: loads without peft
    merged = AutoModelForCausalLM.from_pretrained(res.path)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    changed = [n for (n, a), (_, b) in zip(merged.named_parameters(), base.named_parameters()) if not (a == b).all()]
    assert changed and all("proj" in n for n in changed)  # only the adapted linear layers moved


def test_grid_points_cover_objectives_times_grid():
    from qup_assets.assets.training import grid_points, point_name
    from qup_assets.study import Grid

    t = Training(objectives=["sft", "dft"], grid=Grid(lr=[2e-5, 5e-5], batch_size=[128, 256]))
    points = grid_points(t)
    assert len(points) == 8 and ("dft", 5e-5, 128) in points
    assert point_name("dft", 5e-5, 128, t) == "dft-lr5e-05-bs128"
    assert grid_points(Training()) == [("sft", 5e-5, 256), ("dft", 5e-5, 256)]


# ---------------------------------------------------------------- evaluation


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_more_problems():
    rng = np.random.default_rng(0)
    widths = []
    for n in (20, 80, 320):
        acc = rng.binomial(4, 0.4, size=n) / 4
        low, high = bootstrap_ci(acc, 2000, seed=1)
        assert low <= acc.mean() <= high
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]
    assert bootstrap_ci(acc, 500, seed=1) == bootstrap_ci(acc, 500, seed=1)


def test_eval_table_avg_at_k_pass_at_k_and_macro():
    samples = pd.DataFrame({
        "benchmark": ["a"] * 4 + ["b"] * 4,
        "problem_id": ["a1", "a1", "a2", "a2", "b1", "b1", "b2", "b2"],
        "correct": [True, False, False, False, True, True, True, False],
        "verdict": ["correct", "wrong", "no_answer", "wrong", "correct", "correct", "correct", "wrong"],
        "finish_reason": ["stop"] * 7 + ["length"],
        "n_tokens": [10] * 8,
    })
    t = eval_table(samples, k=2, bootstrap_samples=200, seed=0).set_index("benchmark")
    assert t.loc["a", "avg_at_k"] == 0.25 and t.loc["a", "pass_at_k"] == 0.5
    assert t.loc["b", "avg_at_k"] == 0.75 and t.loc["b", "pass_at_k"] == 1.0
    assert t.loc[MACRO, "avg_at_k"] == 0.5 and t.loc[MACRO, "n_problems"] == 4
    assert t.loc["a", "no_answer_rate"] == 0.25 and t.loc["b", "truncation_rate"] == 0.25
    assert (t["ci_low"] <= t["avg_at_k"]).all() and (t["avg_at_k"] <= t["ci_high"]).all()


def test_eval_repeats_exactly_with_the_same_seed(tiny_model_dir, tmp_path, verifier):
    from qup_assets.evaluation.evaluate import evaluate_model
    from qup_assets.study import Evaluation, Family

    _, problems, _, probs = _data(12, seed=9)
    bench = pd.DataFrame({"problem_id": [f"b{i}" for i in range(12)], "problem": problems,
                          "answer": [p.answer for p in probs], "benchmark": ["x"] * 6 + ["y"] * 6})
    family = Family.model_validate({"student": {"kind": "hf", "model": str(tiny_model_dir)}})
    ev = Evaluation(k=3, temperature=1.0, max_tokens=96, seed=5, bootstrap_samples=300)
    runs = []
    for run in range(2):  # a fresh cache each time: the numbers come from sampling, not from a stored copy
        runs.append(evaluate_model("f", family, str(tiny_model_dir), bench, ev, tmp_path / f"cache{run}", verifier))
    (t0, p0, s0), (t1, p1, s1) = runs
    pd.testing.assert_frame_equal(t0, t1)
    pd.testing.assert_frame_equal(p0, p1)
    assert s0 == s1 == {"cache_hits": 0, "generated": 36}
    assert list(t0["benchmark"]) == ["x", "y", MACRO] and (t0["k"] == 3).all()
    assert p0["k"].eq(3).all() and len(p0) == 12
    # the macro row is the mean of the per-benchmark rows, which are the means of the per-problem accuracies
    by_bench = p0.groupby("benchmark")["accuracy"].mean()
    assert t0.set_index("benchmark").loc[["x", "y"], "avg_at_k"].tolist() == pytest.approx(by_bench.tolist())
    again = evaluate_model("f", family, str(tiny_model_dir), bench, ev, tmp_path / "cache0", verifier)
    assert again[2] == {"cache_hits": 36, "generated": 0}  # a re-run is served from the cache
    pd.testing.assert_frame_equal(again[0], t0)


# ---------------------------------------------------------------- several devices: accelerate through Pipes


@pytest.mark.slow
def test_accelerate_launch_through_dagster_pipes(tiny_model_dir, tmp_path):
    from qup_assets.assets.training import _run_accelerate

    tok = _tok(tiny_model_dir)
    ids, problems, comps, _ = _data(16)
    data = build_training_set(tok, Prompt(), ids, problems, comps, 512)
    job = _job(tiny_model_dir, tmp_path / "ck", "sft")

    @dg.asset
    def launched(context: dg.AssetExecutionContext) -> dg.Output[dict]:
        res = _run_accelerate(context, job, data.records, Training(launcher="accelerate", num_processes=1))
        return dg.Output({"steps": res.steps, "path": res.path})

    with dg.instance_for_test() as instance:
        result = dg.materialize([launched], instance=instance)
        assert result.success
        out = result.output_for_node("launched")
        logs = [e.message for e in instance.all_logs(result.run_id) if e.message]
    assert out["steps"] == 2 and (tmp_path / "ck" / "config.json").exists()
    assert any("rank 0:" in m for m in logs)  # rank 0 reported through Pipes into the run log
