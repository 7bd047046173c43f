"""The synthetic student's HF folder, the transformers backend and the response cache."""

import json
from pathlib import Path

import pytest

from qup_assets.backends.base import BackendError, Request, SamplingParams
from qup_assets.backends.cache import ResponseCache, cached_chunks, cached_sample
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


def test_a_model_folder_without_a_tokenizer_is_named_with_what_is_missing(tiny_model_dir, tmp_path):
    import shutil

    weights = tmp_path / "weights-only"
    shutil.copytree(tiny_model_dir, weights, ignore=shutil.ignore_patterns("*token*", "vocab*", "merges*", "*.jinja"))
    with pytest.raises(BackendError, match=f"model folder {weights} has no tokenizer \\(none of tokenizer.json"):
        describe_model(resolve_model(str(weights)))


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


def test_an_engine_gets_every_uncached_chunk_in_few_calls_and_a_killed_call_loses_only_itself(tmp_path):
    """per_call: whole uncached chunks go to the engine together (continuous batching stays full); the chunk
    boundaries, what is cached and what a resume recomputes stay those of fixed chunks."""
    keys = [f"k{i}" for i in range(10)]
    calls: list[list[int]] = []

    def compute(idx):
        calls.append(list(idx))
        return [i * i for i in idx]

    enc, dec = (lambda v: {"v": v}), (lambda h: h["v"])
    with ResponseCache(tmp_path, "e") as cache:
        cache.put_many([("k4", enc(16)), ("k5", enc(25)), ("k3", enc(9))])  # chunk [4, 5] cached; [2, 3] only half
        out = cached_chunks(cache, keys, compute, enc, dec, chunk_size=2, per_call=4)
        assert out == [i * i for i in range(10)]
        assert calls == [[0, 1, 2, 3], [6, 7, 8, 9]]  # whole chunks, at most 4 per call; [4, 5] from the cache
        assert (cache.hits, cache.misses) == (2, 8)

    calls.clear()  # without per_call (a backend whose results depend on its batch): one chunk per call
    with ResponseCache(tmp_path, "f") as cache:
        cached_chunks(cache, keys, compute, enc, dec, chunk_size=4)
    assert calls == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]

    class Killed(Exception):
        pass

    def dies_on_second_call(idx):
        if calls:
            raise Killed
        return compute(idx)

    calls.clear()
    with ResponseCache(tmp_path, "g") as cache, pytest.raises(Killed):
        cached_chunks(cache, keys, dies_on_second_call, enc, dec, chunk_size=2, per_call=6)
    assert calls == [[0, 1, 2, 3, 4, 5]]
    calls.clear()
    with ResponseCache(tmp_path, "g") as cache:  # the resume computes what the killed call had
        assert cached_chunks(cache, keys, compute, enc, dec, chunk_size=2, per_call=6) == [i * i for i in range(10)]
    assert calls == [[6, 7, 8, 9]]


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


def test_a_chatml_prompt_on_a_tokenizer_without_chatml_is_refused_with_the_fix():
    """paper.yaml once gave Qwen's ChatML prompt to Llama-3.2 and DeepSeekMath, whose tokenizers read
    <|im_start|> as text. The synthetic llama tokenizer has Llama-3's specials, not ChatML's."""
    from qup_assets.world.student import build_tokenizer

    texts = ["Mia has 3 apples. Then Mia buys 2 more apples. How many? 3 + 2 = 5"] * 20
    llama, qwen = build_tokenizer(texts, "llama"), build_tokenizer(texts, "qwen2")
    chatml = Prompt(format="plain", template="qwen-boxed")
    with pytest.raises(ValueError, match=r"uses <\|im_end\|>.*template: question-boxed"):
        render_prompt(llama, chatml, "Q?")
    assert render_prompt(qwen, chatml, "Q?").endswith("<|im_start|>assistant\n")
    for tok in (llama, qwen):
        assert render_prompt(tok, Prompt(format="plain", template="question-boxed"), "Q?").startswith("Question: Q?\n")


def test_the_cache_reads_values_on_demand_across_many_shards_and_recomputes_a_damaged_one(tmp_path):
    """Every process that wrote leaves a shard: 40 of them are all readable (a few open at a time), and a line
    damaged in place after it was indexed is a miss that is computed again, never a wrong value."""
    for w in range(40):
        with ResponseCache(tmp_path, "n") as cache:
            cache.put_many([(f"key-{w}-{i}", {"text": f"value {w} {i}", "w": w}) for i in range(5)])
    with ResponseCache(tmp_path, "n") as cache:
        assert len(cache) == 200 and len(list((tmp_path / "n").glob("shard-*.jsonl"))) == 40
        assert all(cache.get(f"key-{w}-{i}") == {"text": f"value {w} {i}", "w": w} for w in range(40) for i in range(5))
        assert len(cache._open) <= 16
        assert cache.get("key-never-written") is None
    shard = sorted((tmp_path / "n").glob("shard-*.jsonl"))[0]
    data = shard.read_bytes()
    target = data.splitlines(keepends=True)[2]
    shard.write_bytes(data.replace(target, target.replace(b'"text": "', b'"text": \x00"')))
    with ResponseCache(tmp_path, "n") as cache:
        key = json.loads(target)["k"]
        assert cache.get(key) is None and cache.corrupt_lines == 1
        computed = cached_chunks(cache, [key], lambda idx: ["again"], encode=lambda v: {"text": v, "w": -1},
                                 decode=lambda h: h["text"], chunk_size=1)
        assert computed == ["again"]
    for _ in range(2):  # the recomputed copy is found from then on, whichever shard is read first
        with ResponseCache(tmp_path, "n") as cache:
            assert cache.get(key) == {"text": "again", "w": -1}


def test_a_rows_sample_is_its_own_whatever_the_batch(tiny_model_dir):
    """Each row draws from its own seeded uniforms and finished rows leave the batch: the same request gives
    the same text alone, in a batch of 4 or in a batch of 24."""
    lm = TransformersBackend(tiny_model_dir, batch_size=24)
    reqs = [Request(p, i) for p in _prompts(lm, 6) for i in range(4)]
    params = SamplingParams(temperature=1.0, max_tokens=40, seed=3)
    wide = lm.sample(reqs, params)
    lm.sample_batch_size = 4
    assert lm.sample(reqs, params) == wide
    lm.sample_batch_size = 1
    assert lm.sample(reqs[:3], params) == wide[:3]
    assert len({o.text for o in wide}) > 6  # T=1 samples differ between a problem's rows


def test_picking_a_token_follows_the_distribution_and_top_p():
    import torch

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]).repeat(20000, 1))
    u = torch.rand(20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    picks = TransformersBackend._pick(logits, SamplingParams(temperature=1.0), u)
    freq = torch.bincount(picks, minlength=4) / 20000
    assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.015)
    nucleus = TransformersBackend._pick(logits, SamplingParams(temperature=1.0, top_p=0.75), u)
    freq = torch.bincount(nucleus, minlength=4) / 20000
    assert freq[2:].sum() == 0 and abs(freq[0] - 0.5 / 0.8) < 0.015  # {0, 1} hold 0.8 >= 0.75 of the mass
    assert (TransformersBackend._pick(logits[:3], SamplingParams(temperature=0.0), u[:3]) == 0).all()


def test_a_server_that_keeps_failing_is_given_up_after_the_studys_retries_and_one_round_of_requests():
    """`max_retries` / `retry_backoff` of an openai backend reach the client; when the server keeps answering
    503, the call fails after those retries of the requests in flight, and the queued ones are never sent."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from qup_assets.backends.factory import open_lm
    from qup_assets.study import Backend

    hits = []

    class Unavailable(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the http.server API
            hits.append(self.path)
            self.send_response(503)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        backend = Backend(kind="openai", base_url=f"http://127.0.0.1:{server.server_address[1]}/v1", model="m",
                          max_concurrency=2, max_retries=2, retry_backoff=0.01)
        lm = open_lm(backend, "m")
        with pytest.raises(BackendError, match="unreachable after 3 attempts"):
            lm.sample([Request(f"{i} + 1 =", 0) for i in range(40)], SamplingParams(max_tokens=4))
    finally:
        server.shutdown()
    assert 3 <= len(hits) <= 2 * 3  # the two requests in flight, three attempts each; the other 38 never sent


MICRO_QWEN = Path(__file__).resolve().parents[1] / "data" / "world" / "micro" / "students" / "micro-qwen" / "model"


def _qwen_base_like(tmp_path):
    """micro's shipped student relabelled as Qwen2.5-Math base ships: tokenizer and generation_config eos
    <|endoftext|>, while its ChatML template closes an assistant turn with <|im_end|>."""
    import shutil

    from transformers import AutoTokenizer, GenerationConfig

    folder = tmp_path / "qwen-base-like"
    shutil.copytree(MICRO_QWEN, folder)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.eos_token = "<|endoftext|>"
    tok.save_pretrained(folder)
    gen = GenerationConfig.from_pretrained(folder)
    gen.eos_token_id = tok.convert_tokens_to_ids("<|endoftext|>")
    gen.save_pretrained(folder)
    return folder, tok.convert_tokens_to_ids("<|endoftext|>"), tok.convert_tokens_to_ids("<|im_end|>")


def test_a_base_model_on_a_chat_prompt_stops_at_its_end_of_turn_as_well_as_its_eos(tmp_path):
    """Qwen2.5-Math's evaluation stops at <|endoftext|> and <|im_end|>: so does every local backend."""
    from qup_assets.backends.stops import stop_token_ids

    folder, endoftext, im_end = _qwen_base_like(tmp_path)
    lm = TransformersBackend(folder)
    assert lm.tokenizer.eos_token_id == endoftext != im_end
    assert stop_token_ids(lm.tokenizer, lm.model.generation_config) == sorted({endoftext, im_end})
    assert lm.eos_ids == {endoftext, im_end}
    # a greedy chat answer ends at <|im_end|> (the student was pretrained on it), not at max_tokens
    prompt = render_prompt(lm.tokenizer, Prompt(), "Ava has 2 coins. Then Ava buys 3 more coins. How many?")
    out = lm.sample([Request(prompt)], SamplingParams(temperature=0.0, max_tokens=200))[0]
    assert out.finish_reason == "stop" and "<|im_end|>" not in out.text


def test_prompts_longer_than_the_studys_budget_are_refused_before_the_engine_opens(tiny_model_dir, tmp_path,
                                                                                   monkeypatch):
    """evaluate_model renders and measures the prompts first: a benchmark item longer than max_prompt_tokens
    fails with the items and the setting to change, and no engine is opened for it."""
    import pandas as pd

    from qup_assets.backends.context import PromptTooLong
    from qup_assets.evaluation import evaluate as evaluate_module
    from qup_assets.study import Evaluation, Family

    opened = []
    monkeypatch.setattr(evaluate_module, "open_backend", lambda *a, **k: opened.append(a))
    bench = pd.DataFrame({"benchmark": "b", "problem_id": ["short", "long"], "answer": ["2", "3"],
                          "problem": ["What is 1 + 1?", "What is " + " + ".join(["1"] * 200) + "?"]})
    family = Family.model_validate({"student": {"kind": "hf", "model": str(tiny_model_dir)}})
    with pytest.raises(PromptTooLong, match=r"1 of 2 benchmark prompts are longer than max_prompt_tokens 64 "
                                            r"\(longest: long \(\d+\)\): raise max_prompt_tokens"):
        evaluate_module.evaluate_model("f", family, str(tiny_model_dir), bench, Evaluation(k=1), tmp_path, None,
                                       max_prompt_tokens=64)
    assert not opened


def test_a_prompt_that_fills_the_servers_context_is_too_long_not_a_broken_server():
    """vLLM 0.26 clamps max_tokens to the room a prompt leaves: a prompt that fills the context comes back as
    "max_tokens must be at least 1, got 0" (seen with an Oracle prompt of a 512-token server). That is one
    prompt's property, recorded as prompt_too_long, not a reason to stop the step."""
    from qup_assets.backends.openai_backend import RequestRejected, _too_long

    full = '{"error":{"message":"max_tokens must be at least 1, got 0. (parameter=max_tokens, value=0)","code":400}}'
    assert _too_long(RequestRejected("x", 400, full))
    assert _too_long(RequestRejected("x", 400, "This model's maximum context length is 512 tokens"))
    assert not _too_long(RequestRejected("x", 400, "max_tokens must be at least 1, got -3"))
    assert not _too_long(RequestRejected("x", 401, full))
