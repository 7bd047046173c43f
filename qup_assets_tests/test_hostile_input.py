"""Hostile input at every entry point: code-injection payloads, enormous and broken text, and secrets.

A payload that would create a sentinel file if anything evaluated it goes through answer extraction,
verification, the Oracle's parsers, a reward model, training-data building and the report. The
sentinel must never appear; each input gets a verdict or a recorded rejection, never a crash.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from qup_assets.mathcore.extract import Extraction, extract_answer
from qup_assets.oracle.base import OracleItem
from qup_assets.oracle.llm import MAX_OUTPUT_CHARS, parse_output
from qup_assets.oracle.symbolic import SymbolicOracle

from .helpers import payloads

REPO = Path(__file__).resolve().parent.parent


def test_payloads_are_never_executed_anywhere(tmp_path, verifier, tiny_model_dir):
    sentinel = tmp_path / "PWNED"
    texts = payloads(sentinel)

    # answer extraction and verification: a verdict for every input, never a crash
    extracted = [extract_answer(t) for t in texts]
    assert extracted[0] == Extraction(f"__import__('os').system('touch {sentinel}')", "boxed")  # text, never run
    assert extracted[texts.index("")] == Extraction(None, "none")
    for ex in extracted:  # each answer is bounded, valid text that any later step can store and show
        assert ex.method in {"boxed", "marker", "none"}
        assert ex.answer is None or (len(ex.answer) <= 1_000_000 and ex.answer.encode("utf-8"))
    results = verifier.verify_many([("4", t) for t in texts])
    assert len(results) == len(texts)
    assert {r.verdict for r in results} <= {"correct", "wrong", "no_answer", "timeout", "rejected"}
    assert [r.correct for r in results][:9] == [False] * 9

    # the Oracle: the LLM output parser and the symbolic step parser
    parsed = [parse_output(t) for t in texts]
    assert parsed[0] == texts[0]  # no tags, no preamble: the reply is the solution, as text
    assert parsed[texts.index("")] is None and parsed[[len(t) for t in texts].index(max(map(len, texts)))] is None
    assert all(p is None or len(p) <= MAX_OUTPUT_CHARS for p in parsed)
    from qup_assets.world.generator import generate

    probs = generate(3, 5, min_steps=2, max_steps=2, max_operand=9)
    oracle = SymbolicOracle(verifier, student_style="qwen")
    items = [OracleItem(f"p{i}", probs[i % 3].problem, probs[i % 3].answer, native=t,
                        program=probs[i % 3].program.to_json()) for i, t in enumerate(texts)]
    for kind in ("style_align", "refine"):
        out = oracle.run(kind, items)
        assert len(out) == len(items) and all(r.reason for r in out)  # a recorded outcome per item

    # a reward model scores the text as tokens
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForSequenceClassification

    from qup_assets.reward.scorers import open_reward_model

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, num_labels=1, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    Qwen2ForSequenceClassification(cfg).save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    scores = open_reward_model("sequence_classifier", str(tmp_path / "rm")).score(["2+2?"] * 5, texts[:5])
    assert len(scores) == 5

    # training data building tokenizes the text, nothing else
    from qup_assets.study import Prompt
    from qup_assets.training.finetune import build_training_set

    data = build_training_set(tok, Prompt(), [f"p{i}" for i in range(5)], ["2+2?"] * 5, texts[:5], 4096)
    assert len(data.records) + len(data.dropped) == 5

    # (the report escapes what it shows: test_report.py)
    assert not sentinel.exists()


def test_trust_remote_code_is_off_unless_the_study_turns_it_on():
    from qup_assets.study import load_study

    for name in ("micro", "tiny"):
        s = load_study(name)
        assert not any(f.trust_remote_code for f in s.families.values())
        assert not any(rm.trust_remote_code for rm in s.reward_models)
    paper = load_study("paper")
    # only the one RM whose code ships with the model asks for it, by name
    assert [rm.name for rm in paper.reward_models if rm.trust_remote_code] == ["qwen2.5-math-rm-72b"]
    assert not any(f.trust_remote_code for f in paper.families.values())


# ---------------------------------------------------------------- secrets: a fake key through a real run


class _FakeOpenAI(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint on 127.0.0.1 that records the Authorization headers it sees."""

    seen: list[str] = []

    def do_POST(self):  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _FakeOpenAI.seen.append(self.headers.get("Authorization", ""))
        text = "Step 1: I think so.\nThe final answer is $\\boxed{3}$."
        if body.get("messages"):
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        else:
            choice = {"index": 0, "text": text, "finish_reason": "stop"}
        out = json.dumps({"id": "x", "object": "chat.completion", "choices": [choice],
                          "usage": {"prompt_tokens": 5, "completion_tokens": 9}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_an_api_key_is_used_but_never_written_anywhere(micro_study, monkeypatch):
    ms = micro_study.copy(micro_study.root.parent / "secrets").env(monkeypatch)
    server = HTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    key = "sk-qup-FAKE-7f3a9c0d1e2b"
    monkeypatch.setenv("QUP_TEST_ORACLE_KEY", key)
    base = f"http://127.0.0.1:{server.server_address[1]}/v1"
    ms.study.write_text(ms.study.read_text().replace(
        "oracle: {kind: symbolic}",
        "oracle: {kind: llm, model: fake-oracle, max_retries: 0, min_verified_share: 0, max_tokens: 64, backend: {kind: openai, "
        f"base_url: '{base}', model: fake-oracle, api_key_env: QUP_TEST_ORACLE_KEY, api: chat, "
        "per_request_seed: false}}"))
    from qup_assets.cli import main

    try:
        assert main(["run", "--study", str(ms.study), "--select", "key:oracle_refined_traces"]) == 0
    finally:
        server.shutdown()
    assert _FakeOpenAI.seen and all(h == f"Bearer {key}" for h in _FakeOpenAI.seen)  # the key was used
    leaks = [str(p) for root in (ms.store_root, ms.home) for p in root.rglob("*")
             if p.is_file() and key.encode() in p.read_bytes()]
    assert not leaks, f"the API key was written to {leaks}"
    traces = pd.read_parquet(ms.store / "tables" / "oracle_refined_traces" / "micro-qwen.parquet")
    assert traces["oracle"].str.startswith("llm:fake-oracle").all()
    # Parquet pages may be compressed, so the byte scan above cannot see into them: read the tables and runs.
    for table in ms.store.joinpath("tables").rglob("*.parquet"):
        df = pd.read_parquet(table)
        assert not df.astype(str).apply(lambda col: col.str.contains(key, regex=False)).any().any(), table
    instance = dg.DagsterInstance.get()
    for run in instance.get_runs():
        assert key not in json.dumps(run.run_config, default=str) and key not in json.dumps(run.tags), run.run_id
