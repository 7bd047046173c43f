"""The memory model (qup_assets/memory.py): paper.yaml fits one 8 x 80 GB node, and what cannot fit is refused
before anything runs, with the number and the setting to change."""

from qup_assets import memory
from qup_assets.cli import main
from qup_assets.study import load_study


def test_paper_fits_one_node_of_eight_80gb_gpus():
    """Four of the eight GPUs are the Oracle's server's (hardware.oracle_gpus): training shards over the other four."""
    study = load_study("paper")
    rows, problems = memory.check(study)
    assert problems == []
    text = "\n".join(f"{a} {b}" for a, b in rows)
    for family in study.families:
        assert f"{family} training per GPU (sharded over 4)" in text and f"{family} vLLM engine per GPU" in text
    assert "qwen2.5-math-rm-72b (vLLM, tensor parallel 4)" in text


def test_the_sums_for_a_7b_full_fine_tune():
    """Qwen2.5-Math-7B, FSDP over 8 GPUs, 2 x 4096 tokens per forward: 16 bytes per parameter sharded (15.2 GB)
    and 10 bytes per token per vocabulary entry of logits (12.5 GB) dominate."""
    shape = memory.PUBLISHED["Qwen/Qwen2.5-Math-7B"]
    t = memory.training_gb(shape, micro_batch=2, seq=4096, gpus=8, sharded=True, recompute=True)
    assert round(t["weights, gradients, AdamW (fp32)"], 1) == 15.2 and round(t["logits"], 1) == 12.5
    whole = memory.training_gb(shape, micro_batch=2, seq=4096, gpus=8, sharded=False, recompute=False)
    assert whole["total"] > 8 * t["weights, gradients, AdamW (fp32)"] > t["total"]


def test_a_micro_batch_whose_logits_cannot_fit_is_refused_by_plan_and_run(tmp_path, monkeypatch, capsys):
    text = load_study("paper").source_path
    study = tmp_path / "paper.yaml"
    study.write_text(open(text).read().replace("micro_batch_size: 2", "micro_batch_size: 16"))
    _, problems = memory.check(load_study(str(study)))
    assert len(problems) == 4 and all("lower training.micro_batch_size (16" in p for p in problems)
    assert "the logits of one micro-batch of 4096 tokens alone are 99.7 GB)" in problems[1]
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("QUP_STORE", str(tmp_path / "store"))
    assert main(["run", "--study", str(study)]) == 2
    err = capsys.readouterr().err
    assert "error: family qwen2.5-math-7b: fine-tuning needs" in err and "qup plan --study paper" in err
    assert not (tmp_path / "store" / "studies" / "paper" / "tables").exists()  # nothing ran


def test_an_engine_whose_weights_cannot_fit_names_tensor_parallelism(tmp_path):
    text = open(load_study("paper").source_path).read()
    study = tmp_path / "p.yaml"
    study.write_text(text.replace("backend: vllm, engine: {tensor_parallel_size: 4,", "backend: vllm, engine: {tensor_parallel_size: 1,"))
    _, problems = memory.check(load_study(str(study)))
    assert problems == ["reward model qwen2.5-math-rm-72b: 145 GB of weights per GPU do not fit hardware.gpu_memory_gb "
                        "80: raise its engine.tensor_parallel_size"]


def test_a_local_model_folder_is_measured_from_its_config(tiny_model_dir):
    import json

    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    shape = memory.shape_of(tiny_model_dir, None)
    assert (shape.hidden, shape.layers, shape.vocab) == (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"])
    assert shape.params > 0


def test_a_cpu_study_is_not_checked():
    rows, problems = memory.check(load_study("micro"))
    assert problems == [] and "not checked" in rows[0][1]


def test_paper_lite_fits_one_80gb_gpu_in_about_an_hour():
    """The study to try before booking a node: every engine on the one GPU, and qup plan's expected H100-hours
    (vLLM's published rate, answers of the prior's length) about an hour."""
    from pathlib import Path

    from qup_assets.study import gpus
    from qup_assets.plan import estimate

    study = load_study("paper_lite")
    rows, problems = memory.check(study)
    assert problems == [] and any("oracle Qwen/Qwen2.5-Math-7B-Instruct vLLM engine" in r[0] for r in rows)
    assert gpus.student_gpus(study) == [0] and max(n for _, n in gpus.every_need(study)) == 1
    plan = dict(estimate(study, Path("/nonexistent")))
    hours = float(plan["  all stages, all families, expected"].removesuffix(" h"))
    assert 0.2 <= hours <= 1.5, plan
