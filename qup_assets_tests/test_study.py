"""Study files: the shipped ones load, bad ones fail at load with file, field path and expectation."""

import pytest

from qup_assets.study import StudyError, load_study

MINIMAL = """
name: t
problems: {kind: synthetic, size: 10}
benchmarks:
  - name: b
    source: {kind: synthetic, size: 5, seed: 9}
families:
  fam-a:
    student: {kind: synthetic, style: qwen}
"""


@pytest.mark.parametrize("name", ["micro", "tiny", "paper", "paper_lite"])
def test_shipped_studies_load(name):
    study = load_study(name)
    assert study.name == name
    assert study.families


def test_paper_defaults_follow_the_paper():
    s = load_study("paper")
    assert (s.sampling.n, s.sampling.temperature) == (8, 1.0)
    assert (s.training.lr, s.training.batch_size, s.training.epochs) == (5e-5, 256, 1)
    assert (s.evaluation.k, s.evaluation.temperature) == (16, 1.0)
    assert s.evaluation.max_tokens + s.max_prompt_tokens == 4096  # the paper's 4096 tokens: prompt and answer
    assert set(s.families) == {"qwen2.5-math-1.5b", "qwen2.5-math-7b", "llama-3.2-3b", "deepseekmath-7b"}
    assert {b.name for b in s.benchmarks} == {"math500", "minerva-math", "aime24", "amc23", "olympiadbench"}
    assert s.training.grid.lr == [2e-5, 5e-5] and s.training.grid.batch_size == [128, 256]


def test_the_paper_engines_are_set_for_one_80gb_gpu():
    for name, family in load_study("paper").families.items():
        args = family.backend.engine.engine_args()
        assert family.backend.kind == "vllm" and args["tensor_parallel_size"] == 1, name
        assert args["max_model_len"] >= 4096, name  # the models' own context; samples stop there
        assert 0.8 <= args["gpu_memory_utilization"] <= 0.95 and args["dtype"] == "bfloat16", name
        assert "prompts_per_call" not in args and "extra" not in args


def test_minimal_study_gets_paper_defaults(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(MINIMAL)
    s = load_study(str(p))
    assert s.sampling.n == 8 and s.evaluation.k == 16 and s.training.objectives == ["sft", "dft"]
    assert s.families["fam-a"].trust_remote_code is False


def test_study_chosen_by_env(monkeypatch, tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(MINIMAL)
    monkeypatch.setenv("QUP_STUDY", str(p))
    assert load_study().name == "t"
    monkeypatch.setenv("QUP_STUDY", "micro")
    assert load_study().name == "micro"


BAD = {
    "typo_key": (MINIMAL + "samplng: {n: 4}\n", ["samplng", "unknown key"]),
    "typo_nested": (MINIMAL.replace("size: 10}", "size: 10, sede: 3}"), ["problems.synthetic.sede", "unknown key"]),
    "wrong_type": (MINIMAL + "sampling: {n: lots}\n", ["sampling.n", "integer", "'lots'"]),
    "negative": (MINIMAL + "evaluation: {k: 0}\n", ["evaluation.k", "greater than 0"]),
    "bad_family_name": (MINIMAL.replace("fam-a:", "Fam A!:"), ["families", "not a valid partition key"]),
    "duplicate_family": (MINIMAL + "  fam-a:\n    student: {kind: synthetic, style: llama}\n", ["duplicate key 'fam-a'"]),
    "duplicate_benchmark": (
        MINIMAL.replace("benchmarks:\n", "benchmarks:\n  - name: b\n    source: {kind: synthetic, size: 5}\n"),
        ["benchmarks", "duplicate benchmark names: ['b']"],
    ),
    "unknown_source_kind": (MINIMAL.replace("{kind: synthetic, size: 10}", "{kind: s3, size: 10}"), ["problems", "'s3'"]),
    "missing_families": ("name: t\nproblems: {kind: synthetic, size: 10}\nbenchmarks: []\n", ["families", "Field required"]),
    "plain_prompt_without_template": (
        MINIMAL + "    prompt: {format: plain}\n", ["families.fam-a.prompt", "needs a template"]
    ),
    "openai_without_url": (MINIMAL + "    backend: {kind: openai}\n", ["families.fam-a.backend", "base_url"]),
    "unknown_engine_argument": (MINIMAL + "    backend: {kind: vllm, engine: {extra: {max_num_seq: 8}}}\n",
                                ["families.fam-a.backend.engine.extra", "unknown vLLM engine argument(s) ['max_num_seq']",
                                 "max_num_batched_tokens"]),
    "engine_typo": (MINIMAL + "    backend: {kind: vllm, engine: {tensor_parallel: 2}}\n",
                    ["families.fam-a.backend.engine.tensor_parallel", "unknown key"]),
    "process_rm_on_vllm": (MINIMAL + "reward_models: [{name: prm, kind: process, model: x, backend: vllm}]\n",
                           ["reward_models.0", "no vLLM path here"]),
    "engine_on_transformers": (MINIMAL + "    backend: {kind: transformers, engine: {max_model_len: 512}}\n",
                               ["engine settings are for the vllm backend"]),
    "retries_on_a_local_engine": (MINIMAL + "    backend: {kind: transformers, max_retries: 0}\n",
                                  ["['max_retries'] are for the openai backend"]),
    "answer_beyond_the_context": (
        MINIMAL + "    backend: {kind: vllm, engine: {max_model_len: 2048}}\nsampling: {max_tokens: 1536}\n",
        ["sampling.max_tokens 1536 + max_prompt_tokens 1024 = 2560 tokens do not fit",
         "families.fam-a.backend.engine.max_model_len 2048", "lower sampling.max_tokens to 1024"]),
    "oracle_answer_beyond_its_context": (
        MINIMAL + "oracle: {kind: llm, model: o, max_model_len: 4096, max_tokens: 4096, backend: {kind: openai, "
                  "base_url: 'http://o/v1'}}\n",
        ["oracle.max_tokens 4096", "do not fit its context of 4096 (oracle.max_model_len)",
         "lower oracle.max_tokens to 1024"]),
    "process_rm_with_a_model": (MINIMAL + "reward_models: [{name: p, kind: symbolic_process, model: m}]\n",
                                ["'symbolic_process' reward model is the synthetic world's own checker"]),
    "process_rm_on_hub_problems": (
        MINIMAL.replace("{kind: synthetic, size: 10}", "{kind: local, path: x.jsonl}")
        + "reward_models: [{name: p, kind: symbolic_process}]\n", ["checks the synthetic world's problems", "'local'"]),
    "error_scale_on_a_learned_rm": (MINIMAL + "reward_models: [{name: r, kind: synthetic, error_scale: 2}]\n",
                                    ["settings of a 'symbolic_process' reward model"]),
    "no_headline_rm": (MINIMAL + "reward_models: [{name: p, kind: symbolic_process, headline: false}]\n",
                       ["at least one must carry the headline verdict"]),
    "not_yaml": ("name: [unclosed\n", ["not valid YAML"]),
    "not_mapping": ("- just\n- a list\n", ["must be a YAML mapping"]),
    "local_bad_suffix": (MINIMAL.replace("{kind: synthetic, size: 10}", "{kind: local, path: x.csv}"), ["problems.local.path", ".jsonl"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_study_files_fail_clearly(tmp_path, case):
    text, expected = BAD[case]
    p = tmp_path / f"{case}.yaml"
    p.write_text(text)
    with pytest.raises(StudyError) as err:
        load_study(str(p))
    msg = str(err.value)
    assert str(p) in msg
    for fragment in expected:
        assert fragment in msg, f"{fragment!r} not in:\n{msg}"


def test_unknown_study_name_lists_known():
    with pytest.raises(StudyError, match="known studies: .*micro"):
        load_study("no-such-study")


def test_the_gpu_smoke_study_is_valid_and_the_check_refuses_a_machine_without_cuda(tmp_path):
    """bench/gpu_smoke.py (make gpu-smoke): its study loads (paper's executor, one ~0.3B student), and on a
    machine without CUDA it says so and exits 2 before anything runs."""
    import importlib.util
    import os
    import subprocess
    import sys

    from qup_assets.study import REPO_ROOT

    path = REPO_ROOT / "bench" / "gpu_smoke.py"
    spec = importlib.util.spec_from_file_location("gpu_smoke", path)
    smoke = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(smoke)
    (tmp_path / "gpu_smoke.yaml").write_text(smoke.smoke_study())
    s = load_study(str(tmp_path / "gpu_smoke.yaml"))
    (fam,) = s.families.values()
    assert s.executor == "multiprocess" and (fam.student.hidden_size, fam.student.num_layers) == (1024, 24)
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                         env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, timeout=120)
    assert out.returncode == 2 and "needs a CUDA GPU" in out.stderr and "Nothing was run" in out.stderr


def test_the_gpu_check_fails_a_stage_that_did_not_use_the_gpu_ran_over_or_kept_its_memory():
    """bench/gpu_smoke.py's judgement, from the samples it takes on a GPU machine (nvidia-smi's memory and compute
    pids, each step's span and process tree), given here: the checks must fail when the GPU path is broken."""
    import importlib.util

    from qup_assets.study import REPO_ROOT

    spec = importlib.util.spec_from_file_location("gpu_smoke", REPO_ROOT / "bench" / "gpu_smoke.py")
    smoke = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(smoke)
    base = 1000
    spans = {"base_model": (0.0, 100.0, True), "native_samples": (101.0, 130.0, True),
             "native_traces": (131.0, 132.0, True), "native_checkpoints": (140.0, 400.0, True)}
    trees = {"base_model": {11, 12}, "native_samples": {21}, "native_checkpoints": {41, 42}}
    samples = [(t, base + 4000, {12}) for t in range(0, 100)]  # base_model's child on the GPU
    samples += [(t, base, set()) for t in range(101, 131)]  # sampling never touched the GPU
    samples += [(131.5, base, set())]
    samples += [(t, base + 9000, {42}) for t in range(140, 401)]  # training on the GPU, for too long
    samples += [(t, base + 3000, set()) for t in range(403, 420)]  # and its memory never came back
    rows, failures = smoke.judge(spans, samples, trees, base)
    assert failures == ["native_samples did not use the GPU",
                        "native_checkpoints took 260 s, over its limit of 90 s",
                        f"GPU memory stayed at {base + 3000} MiB after native_checkpoints (baseline {base} MiB)"]
    assert [r[3] for r in rows] == ["yes", "NO", "-", "yes"]
    # where a container hides pids, memory above the baseline during the step is the evidence
    no_pids = [(t, m, set()) for t, m, _ in samples]
    _, failures = smoke.judge(spans, no_pids, {}, base)
    assert "native_samples did not use the GPU" in failures and "base_model did not use the GPU" not in failures
