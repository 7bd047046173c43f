"""Failures stop where they start: each fault below fails the first asset that meets it, with one message that
says what is wrong and what to check, and nothing downstream runs on its empty or useless output.

The Oracle is a real OpenAI-compatible HTTP server on 127.0.0.1 (the LLM Oracle's own backend talks to it),
scripted to answer well, with junk, or to go away; every other fault is a real file or study setting. Each
test works on its own copy of the session's micro study.
"""

import json
import re
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pandas as pd
import pytest

from qup_assets.cli import main

from .helpers import free_port, key

pytestmark = pytest.mark.slow

FAMILY = "micro-qwen"


class OracleServer:
    """/v1/completions that answers each prompt with the native trace of the problem in it ("good"), with a reply
    that has no answer ("junk"), and stops answering after `serve_at_most` requests (then it is gone)."""

    def __init__(self, solutions: dict[str, str], mode: str = "good", serve_at_most: int | None = None,
                 port: int | None = None):
        self.solutions, self.mode, self.serve_at_most = solutions, mode, serve_at_most
        self.requests = 0
        self.lock = threading.Lock()
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def reply(self, prompt: str) -> str | None:
        with self.lock:
            if self.serve_at_most is not None and self.requests >= self.serve_at_most:
                return None
            self.requests += 1
        if self.mode == "junk":
            return "I am not sure how to approach this problem."
        solution = next((s for p, s in self.solutions.items() if p in prompt), None)
        return f"<solution>\n{solution}\n</solution>" if solution else "I cannot find the problem."

    @contextmanager
    def running(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                text = server.reply(body.get("prompt", ""))
                if text is None:  # gone: the connection drops without an answer
                    self.close_connection = True
                    self.connection.close()
                    return
                data = json.dumps({"choices": [{"text": text, "finish_reason": "stop"}],
                                   "usage": {"completion_tokens": 20}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            httpd.shutdown()
            httpd.server_close()


def _solutions(ms) -> dict[str, str]:
    pool = pd.read_parquet(ms.store / "tables" / "problem_pool" / "_unpartitioned.parquet")
    native = pd.read_parquet(ms.store / "tables" / "native_traces" / f"{FAMILY}.parquet")
    text = dict(zip(pool["problem_id"], pool["problem"]))
    return {text[pid]: c for pid, c in zip(native["problem_id"], native["completion"])}


def _llm_oracle(ms, url: str, model: str = "m", **settings) -> None:
    extra = "".join(f", {k}: {v}" for k, v in settings.items())
    text = ms.study.read_text().replace(
        "oracle: {kind: symbolic}",
        f"oracle: {{kind: llm, model: {model}, max_retries: 0{extra}, backend: {{kind: openai, base_url: '{url}', "
        f"model: {model}, per_request_seed: false, max_retries: 2, retry_backoff: 0.2}}}}")
    assert text != ms.study.read_text()
    ms.study.write_text(text)


def _latest(names: list[str]) -> dict:
    """The newest materialization of each asset of the family (its storage id), to see that nothing ran since."""
    instance = dg.DagsterInstance.get()
    out = {}
    for name in names:
        records = instance.fetch_materializations(key(name), limit=1).records
        out[name] = records[0].storage_id if records else None
    return out


def _failure(capsys) -> str:
    err = capsys.readouterr().err
    return " ".join(err.split())  # one line: the terminal wraps nothing, the assertion reads the sentence


DOWNSTREAM = ["common_problems", "oracle_refined_rewards", "oracle_refined_adaptation", "oracle_refined_checkpoints",
              "oracle_refined_eval", "paradox_report"]


def test_an_oracle_that_returns_junk_stops_after_its_first_chunk(micro_study, monkeypatch, capsys):
    ms = micro_study.copy(micro_study.root.parent / "junk-oracle").env(monkeypatch)
    before = _latest(DOWNSTREAM)
    n = len(pd.read_parquet(ms.store / "tables" / "native_traces" / f"{FAMILY}.parquet"))
    with OracleServer(_solutions(ms), mode="junk").running() as oracle:
        _llm_oracle(ms, oracle.url, fail_fast_after=8)
        assert main(["run", "--study", str(ms.study), "--select", "key:oracle_refined_traces+"]) == 1
    err = _failure(capsys)
    assert (f"{FAMILY}/oracle_refined: 0/8 verified; 8 x no final answer found: the first 8 of {n} rewrites below "
            "oracle.min_verified_share = 0.2, so the Oracle stopped there") in err, err[-3000:]
    assert "Check the Oracle's prompt (refine.v2), its chat template, oracle.model (m)" in err
    assert oracle.requests == 8  # not the other rewrites
    assert _latest(DOWNSTREAM) == before  # nothing downstream ran


def test_an_empty_common_set_stops_the_run_at_common_problems_with_the_reasons(micro_study, monkeypatch, capsys):
    """Fail-fast off (min_verified_share 0): every Oracle variant is junk, so no problem is common; the blocking
    check stops the run at common_problems and says, per variant, what verified and why not."""
    ms = micro_study.copy(micro_study.root.parent / "empty-common").env(monkeypatch)
    later = DOWNSTREAM[1:]
    before = _latest(later)
    with OracleServer(_solutions(ms), mode="junk").running() as oracle:
        _llm_oracle(ms, oracle.url, min_verified_share=0)
        assert main(["run", "--study", str(ms.study), "--select", "key:native_traces+"]) == 1
    err = _failure(capsys)
    n = len(pd.read_parquet(ms.store / "tables" / "native_traces" / f"{FAMILY}.parquet"))
    assert (f"check common_problems_large_enough on common_problems FAILED: {FAMILY}: common set 0/{n} native "
            "traces (0%) is below min_common_fraction = 0.5") in err, err[-3000:]
    for v in ("oracle_refined", "oracle_synthesized", "style_aligned"):
        assert f"{v}: 0/{n} verified; {n} x no final answer found" in err
    assert "Check the Oracle's prompt version, chat template, model and max_tokens" in err
    assert _latest(later) == before
    # Materialized anyway from the UI, a downstream asset names the empty input instead of a KeyError.
    assert main(["run", "--study", str(ms.study), "--select", "key:style_aligned_adaptation"]) == 1
    err = _failure(capsys)
    assert (f"common_problems[{FAMILY}] is empty: no problem has a verified trace in every variant (of {n} native "
            "traces)") in err and "KeyError" not in err


def test_an_oracle_server_that_goes_away_fails_the_asset_and_a_rerun_reuses_what_was_done(micro_study, monkeypatch,
                                                                                          capsys):
    ms = micro_study.copy(micro_study.root.parent / "oracle-gone").env(monkeypatch)
    first = OracleServer(_solutions(ms), serve_at_most=8)
    with first.running():
        _llm_oracle(ms, first.url, fail_fast_after=8)
        # the backend retries a dropped connection with backoff (twice, 0.2 s then 0.4 s), then gives up
        assert main(["run", "--study", str(ms.study), "--select", "key:oracle_refined_traces"]) == 1
    err = _failure(capsys)
    assert f"{FAMILY}/oracle_refined: oracle unavailable:" in err and "unreachable after" in err, err[-3000:]
    server = OracleServer(_solutions(ms), port=first.port)  # back, at the same address
    with server.running():
        assert main(["run", "--study", str(ms.study), "--select", "key:oracle_refined_traces"]) == 0
    meta = dg.DagsterInstance.get().get_latest_materialization_event(
        key("oracle_refined_traces")).asset_materialization.metadata
    n = len(pd.read_parquet(ms.store / "tables" / "native_traces" / f"{FAMILY}.parquet"))
    assert meta["oracle_cache_hits"].value == 8 and meta["oracle_generated"].value == n - 8  # the first 8 kept
    assert server.requests == n - 8
    df = pd.read_parquet(ms.store / "tables" / "oracle_refined_traces" / f"{FAMILY}.parquet")
    assert df["correct"].all()


def test_an_empty_benchmark_file_fails_benchmarks_and_nothing_after_it(micro_study, monkeypatch, capsys, tmp_path):
    ms = micro_study.copy(micro_study.root.parent / "empty-bench").env(monkeypatch)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    text = ms.study.read_text()
    ms.study.write_text(text.replace("source: {kind: synthetic, size: 20, seed: 70, min_steps: 1, max_steps: 2, "
                                     "max_operand: 9}", f"source: {{kind: local, path: '{empty}'}}"))
    before = _latest(["base_model", "native_eval", "base_eval"])
    assert main(["run", "--study", str(ms.study), "--select", "key:benchmarks+"]) == 1
    err = _failure(capsys)
    assert f"local:{empty}: no rows" in err, err[-3000:]
    assert _latest(["base_model", "native_eval", "base_eval"]) == before


def test_a_model_folder_without_a_tokenizer_fails_base_model_by_name(micro_study, monkeypatch, capsys, tmp_path):
    ms = micro_study.copy(micro_study.root.parent / "no-tokenizer").env(monkeypatch)
    model = tmp_path / "weights-only"
    model.mkdir()
    src = ms.store / "artifacts" / "base_model" / FAMILY / "model"
    for f in src.iterdir():
        if f.is_file() and "token" not in f.name and f.suffix != ".jinja":
            (model / f.name).write_bytes(f.read_bytes())
    text = ms.study.read_text()
    ms.study.write_text(re.sub(r"student: \{kind: synthetic[^}]*\}", f"student: {{kind: hf, model: '{model}'}}", text))
    before = _latest(["native_samples", "native_traces"])
    assert main(["run", "--study", str(ms.study), "--select", "key:base_model+", "--family", FAMILY]) == 1
    err = _failure(capsys)
    assert f"model folder {model} has no tokenizer" in err, err[-3000:]
    assert _latest(["native_samples", "native_traces"]) == before


def test_a_student_that_never_gives_an_answer_fails_native_traces_with_what_it_wrote(micro_study, monkeypatch,
                                                                                    capsys):
    ms = micro_study.copy(micro_study.root.parent / "no-answer").env(monkeypatch)
    text = ms.study.read_text()
    ms.study.write_text(text.replace("sampling: {n: 4, temperature: 1.0, max_tokens: 128",
                                     "sampling: {n: 4, temperature: 1.0, max_tokens: 4"))
    later = ["oracle_refined_traces", "common_problems", "native_rewards"]
    before = _latest(later)
    assert main(["run", "--study", str(ms.study), "--select", "key:native_samples+"]) == 1
    err = _failure(capsys)
    assert re.search(rf"native_samples\[{FAMILY}\]: 0 of \d+ samples verified correct \(\d+ x no_answer.*\), so no "
                     r"native trace; most samples give no final answer", err), err[-3000:]
    assert "(100% were cut off)" in err
    assert _latest(later) == before
