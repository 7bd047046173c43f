"""The synthetic student's HF folder, the transformers backend and the response cache."""

import json

import pytest

from qup_assets.backends.base import BackendError, Request, SamplingParams
from qup_assets.backends.cache import ResponseCache, cached_sample
from qup_assets.backends.hub import describe_model, resolve_model
from qup_assets.backends.prompting import render_prompt
from qup_assets.backends.transformers_backend import TransformersBackend
from qup_assets.study import Prompt

from .helpers import printed_command_works


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return TransformersBackend(tiny_model_dir, batch_size=8)


def test_tokenizer_is_a_real_hf_tokenizer(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert len(tok.tokenize("12345")) == 5  # single-digit splitting
    text = render_prompt(tok, Prompt(), "What is 2+3?")
    assert text == "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n"
    plain = render_prompt(tok, Prompt(format="plain", template="qwen-boxed"), "Q?")
    assert plain.endswith("<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n") and "\\boxed{}" in plain
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.model_type == "qwen2"


def test_describe_and_resolve(tiny_model_dir):
    info = describe_model(resolve_model(str(tiny_model_dir)))
    assert info["architecture"] == "Qwen2ForCausalLM"
    assert info["parameters"] > 10_000 and len(info["fingerprint"]) == 64
    assert "<|im_start|>" in info["chat_template"]


def test_missing_model_says_what_to_download_with_a_command_that_works():
    with pytest.raises(BackendError, match="hf download Qwen/Qwen2.5-Math-999B") as err:
        resolve_model("Qwen/Qwen2.5-Math-999B")
    assert printed_command_works(str(err.value)) == "hf download Qwen/Qwen2.5-Math-999B"
    assert "hf auth login" in str(err.value)  # gated models (Llama) need a login first


def _prompts(lm, n=6):
    return [render_prompt(lm.tokenizer, Prompt(), f"Mia has {i} apples. Then Mia buys 2 more apples. How many?") for i in range(n)]


def test_samples_do_not_depend_on_batch_composition(lm):
    prompts = _prompts(lm)
    params = SamplingParams(temperature=1.0, max_tokens=40, seed=3)
    reqs = [Request(p, i) for p in prompts for i in range(2)]
    together = lm.sample(reqs, params)
    alone = [lm.sample([r], params)[0] for r in reqs[:3]]
    assert [c.text for c in together[:3]] == [c.text for c in alone]
    again = lm.sample(reqs, params)
    assert [c.text for c in again] == [c.text for c in together]
    other_seed = lm.sample(reqs, SamplingParams(temperature=1.0, max_tokens=40, seed=4))
    assert [c.text for c in other_seed] != [c.text for c in together]


def test_finish_reasons_and_token_counts(lm):
    prompts = _prompts(lm, 2)
    short = lm.sample([Request(p) for p in prompts], SamplingParams(temperature=0, max_tokens=3))
    assert all(c.finish_reason == "length" and c.n_tokens == 3 for c in short)
    stopped = lm.sample([Request(prompts[0])], SamplingParams(temperature=0, max_tokens=60, stop=("Step",)))[0]
    assert "Step" not in stopped.text and stopped.finish_reason in {"stop", "length"}


def test_logprobs_prefer_the_models_own_greedy_text(lm):
    prompts = _prompts(lm, 3)
    greedy = [c.text for c in lm.sample([Request(p) for p in prompts], SamplingParams(temperature=0, max_tokens=30))]
    noise = ["zq xv 9 9 9 ## qq" for _ in prompts]
    own, other = lm.logprobs(prompts, greedy), lm.logprobs(prompts, noise)
    for a, b, text in zip(own, other, greedy):
        assert len(a.logprobs) == len(lm.tokenizer(text, add_special_tokens=False)["input_ids"])
        assert all(x <= 0 for x in a.logprobs)
        assert a.nll / len(a.logprobs) < b.nll / len(b.logprobs)
    # batched scoring equals one-by-one scoring
    single = lm.logprobs(prompts[:1], greedy[:1])[0]
    assert single.logprobs == pytest.approx(own[0].logprobs, abs=1e-4)


def test_cache_serves_reruns_and_misses_on_changes(lm, tmp_path):
    reqs = [Request(p, i) for p in _prompts(lm, 5) for i in range(2)]
    params = SamplingParams(temperature=1.0, max_tokens=20, seed=0)
    with ResponseCache(tmp_path, "m") as cache:
        first = cached_sample(lm, cache, reqs, params, chunk_size=4)
        assert (cache.hits, cache.misses) == (0, 10)
    with ResponseCache(tmp_path, "m") as cache:
        second = cached_sample(lm, cache, reqs, params, chunk_size=4)
        assert (cache.hits, cache.misses) == (10, 0)
        assert second == first
        cached_sample(lm, cache, reqs, SamplingParams(temperature=1.0, max_tokens=21, seed=0), chunk_size=4)
        assert cache.misses == 10


def test_truncated_shard_is_skipped_and_its_chunk_recomputed(lm, tmp_path):
    reqs = [Request(p) for p in _prompts(lm, 6)]
    params = SamplingParams(temperature=1.0, max_tokens=20)
    with ResponseCache(tmp_path, "m") as cache:
        full = cached_sample(lm, cache, reqs, params, chunk_size=3)
    shard = next((tmp_path / "m").glob("shard-*.jsonl"))
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 25])  # a crash mid-write of the last line
    with ResponseCache(tmp_path, "m") as cache:
        assert cache.corrupt_lines == 1
        again = cached_sample(lm, cache, reqs, params, chunk_size=3)
        assert (cache.hits, cache.misses) == (3, 3)
    assert again == full
    for line in (tmp_path / "m").glob("shard-*.jsonl"):
        for raw in line.read_bytes().splitlines()[:-1]:
            json.loads(raw)


def test_out_of_memory_halves_the_batch_and_loses_nothing(tiny_model_dir, monkeypatch):
    lm = TransformersBackend(tiny_model_dir, batch_size=8)
    real = lm._sample_batch

    def flaky(requests, params):
        if len(requests) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(requests, params)

    monkeypatch.setattr(lm, "_sample_batch", flaky)
    reqs = [Request(p, i) for p in _prompts(lm, 3) for i in range(2)]
    out = lm.sample(reqs, SamplingParams(temperature=1.0, max_tokens=10))
    assert len(out) == 6 and lm.batch_size == 2
    monkeypatch.setattr(lm, "_sample_batch", lambda r, p: (_ for _ in ()).throw(RuntimeError("shape mismatch")))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        lm.sample(reqs, SamplingParams(max_tokens=5))
