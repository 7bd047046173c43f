"""Faults a study meets in practice: pieces missing between steps, a copied store, Ctrl-C (concurrent runs and
readers: test_students_e2e.py, adding a family).

Each test works on its own copy of the session's materialized micro study (store, cache, models and
the Dagster instance), through the same commands a researcher uses.
"""

import json
import os
import shutil
import subprocess
import sys

import dagster as dg
import pandas as pd
import pytest

from qup_assets.cli import main

from .helpers import key


def _run(ms, *args, sigint_ignored: bool = False) -> subprocess.Popen:
    """`qup run` in a subprocess; `sigint_ignored`: started as a background job of a non-interactive shell is
    (`qup run ... &`: SIGINT ignored from the start, inherited across exec)."""
    import signal

    cmd = [sys.executable, "-m", "qup_assets.cli", "run", "--study", str(ms.study), *args]
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
    return subprocess.Popen(cmd, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=ignore)


@pytest.mark.slow
def test_missing_pieces_fail_clearly_and_recover_once_fixed(micro_study, monkeypatch, capsys):
    ms = micro_study.copy(micro_study.root.parent / "missing").env(monkeypatch)
    original = ms.study.read_text()

    # 1. A checkpoint folder deleted behind the pipeline's back.
    ck = ms.store / "artifacts" / "style_aligned_checkpoints" / "micro-qwen" / "dft"
    shutil.rmtree(ck)
    assert main(["run", "--study", str(ms.study), "--select", "key:style_aligned_eval"]) == 1
    err = capsys.readouterr().err
    assert f"checkpoint folder {ck} is missing" in err and "re-materialize style_aligned_checkpoints" in err
    assert main(["run", "--study", str(ms.study), "--select", "key:style_aligned_checkpoints+"]) == 0
    assert (ck / "config.json").exists()

    # 2. A cache shard of native_samples cut mid-line (a crash while writing): skipped with a warning, only the
    # chunk that held the cut line is sampled again, and the table comes out the same.
    before = pd.read_parquet(ms.store / "tables" / "native_samples" / "micro-qwen.parquet")
    texts = set(before["completion"])

    def native_lines(shard):
        return sum(json.loads(line)["v"].get("text") in texts for line in shard.read_bytes().splitlines())

    shard = max((ms.store / "cache").rglob("shard-*.jsonl"), key=native_lines)
    assert native_lines(shard) >= 200  # the shard native_samples wrote (240 samples)
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 40])
    capsys.readouterr()
    assert main(["run", "--study", str(ms.study), "--select", "key:native_samples", "--force"]) == 0
    instance = dg.DagsterInstance.get()
    rec = instance.get_latest_materialization_event(key("native_samples"))
    meta = rec.asset_materialization.metadata
    assert 0 < meta["generated"].value <= 64 and meta["cache_hits"].value == 240 - meta["generated"].value
    warned = [e.message for e in instance.all_logs(rec.run_id) if e.message and "truncated line" in e.message]
    assert warned and "skipped 1 truncated line(s)" in warned[0], warned
    after = pd.read_parquet(ms.store / "tables" / "native_samples" / "micro-qwen.parquet")
    pd.testing.assert_frame_equal(after.sort_values(["problem_id", "sample_idx"]).reset_index(drop=True),
                                  before.sort_values(["problem_id", "sample_idx"]).reset_index(drop=True))

    # 3. The Oracle endpoint is down: the run fails naming the endpoint, and works once it is back.
    down = original.replace("oracle: {kind: symbolic}", "oracle: {kind: llm, model: m, backend: {kind: openai, "
                            "base_url: 'http://127.0.0.1:9/v1', model: m, per_request_seed: false, max_retries: 1, "
                            "retry_backoff: 0.1}}")
    ms.study.write_text(down)
    assert main(["run", "--study", str(ms.study), "--select", "key:oracle_refined_traces"]) == 1
    err = capsys.readouterr().err
    assert "http://127.0.0.1:9/v1" in err and "unreachable after 2 attempts" in err, err[-2000:]
    ms.study.write_text(original)
    assert main(["run", "--study", str(ms.study), "--select", "key:oracle_refined_traces"]) == 0

    # 4. A reward model path that does not exist: a clear failure, then recovery.
    ms.study.write_text(original.replace("{name: synthetic-rm, kind: synthetic, train_problems: 400, train_steps: 60, pretrain_steps: 60}",
                                         "{name: skywork, kind: sequence_classifier, model: /nonexistent/skywork-rm}"))
    assert main(["run", "--study", str(ms.study), "--select", "key:reward_model"]) == 1
    err = capsys.readouterr().err
    assert "reward model 'skywork'" in err and "/nonexistent/skywork-rm" in err
    ms.study.write_text(original)
    assert main(["run", "--study", str(ms.study), "--select", "key:reward_model"]) == 0
    assert main(["run", "--study", str(ms.study)]) == 0  # everything downstream catches up
    out = capsys.readouterr().out
    assert "study micro: done" in out


@pytest.mark.slow
def test_a_copied_store_uses_its_own_models(micro_study, monkeypatch):
    """Results move between machines: a copy of the store must not reach back into the original."""
    source = micro_study.copy(micro_study.root.parent / "moved-from")  # the session's study stays read-only
    ms = source.copy(micro_study.root.parent / "moved").env(monkeypatch)
    original = source.store / "artifacts" / "base_model" / "micro-qwen" / "model"
    original.rename(original.with_name("model.away"))  # gone from where the copy came from
    assert main(["run", "--study", str(ms.study), "--select", "key:native_samples or key:base_eval"]) == 0
    meta = dg.DagsterInstance.get().get_latest_materialization_event(
        key("native_samples")).asset_materialization.metadata
    assert meta["cache_hits"].value == 240  # same model content: the copied cache still serves every sample


@pytest.mark.slow
def test_ctrl_c_cancels_the_runs_qup_run_launched(micro_study, monkeypatch):
    import signal
    import time

    ms = micro_study.copy(micro_study.root.parent / "ctrl-c").env(monkeypatch)
    # 60 problems x 400 samples: minutes of sampling on one core, so the run is surely inside the step when
    # the signal comes; the test waits for the step's first cached chunk (proof that sampling is under way).
    ms.study.write_text(ms.study.read_text().replace("sampling: {n: 4,", "sampling: {n: 400,"))
    shutil.rmtree(ms.store / "cache")
    # started as `qup run ... &` from a script would be: SIGINT ignored from the start; qup must honour it anyway
    proc = _run(ms, "--select", "key:native_samples", sigint_ignored=True)
    instance = dg.DagsterInstance.get()
    started = dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and not any((ms.store / "cache").rglob("shard-*.jsonl")):
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[0][-2000:]
    (run,) = instance.get_runs(filters=started)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out[-2000:]
    assert "canceled" in out
    deadline = time.monotonic() + 120
    while instance.get_run_by_id(run.run_id).status != dg.DagsterRunStatus.CANCELED and time.monotonic() < deadline:
        time.sleep(1)
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.CANCELED
    assert not instance.get_runs(filters=started)
    assert not (ms.store / "tables" / "native_samples" / "micro-qwen.parquet").exists() or \
        len(pd.read_parquet(ms.store / "tables" / "native_samples" / "micro-qwen.parquet")) == 240  # the old table stays
