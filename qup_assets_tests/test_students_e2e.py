"""The students stage end to end on micro.yaml through a real Dagster instance, and crash-resume."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from qup_assets import variants
from qup_assets.cli import main

from .helpers import key, with_second_family


def _meta(instance, name):
    return instance.get_latest_materialization_event(key(name)).asset_materialization.metadata


@pytest.mark.slow
def test_micro_study_end_to_end_and_cached_rerun(micro_study, monkeypatch, capsys):
    ms = micro_study.copy(micro_study.root.parent / "e2e").env(monkeypatch)
    instance = dg.DagsterInstance.get()
    # An unchanged re-run of the whole study materializes nothing.
    before = _materializations(instance)
    assert main(["run", "--study", str(ms.study)]) == 0
    assert _materializations(instance) == before
    assert "up to date, skipped" in capsys.readouterr().out
    # Every column of every table asset (and of every UI table) explains itself (qup_assets/columns.py).
    tables = [(a.path[-1], m.schema) for a in instance.get_asset_keys()
              if (e := instance.get_latest_materialization_event(a)) is not None
              for m in e.asset_materialization.metadata.values()
              if isinstance(m, (dg.TableSchemaMetadataValue, dg.TableMetadataValue))]
    assert len(tables) >= 40 and not [(n, c.name) for n, s in tables for c in s.columns if not c.description]
    # The finding in one line on the report asset (plain text, the catalog shows it), and each variant's Avg@k with
    # its interval as numbers on its eval asset (the UI plots them over materializations)
    assert _meta(instance, "paradox_report")["headline"].value.startswith("The paradox ")
    ev = _meta(instance, "native_eval")
    assert ev["macro_avg_at_k/sft/ci_low"].value <= ev["macro_avg_at_k/sft"].value <= ev["macro_avg_at_k/sft/ci_high"].value
    base = _meta(instance, "base_model")
    assert 0.0 < base["heldout_greedy_accuracy"].value < 1.0  # an imperfect student
    assert base["parameters"].value > 100_000 and "data:image/png;base64" in base["loss_curve"].value
    # The student and the RM came from data/world (qup world build), byte for byte, not pretrained in the run.
    assert base["origin"].value.startswith("shipped micro/students/micro-qwen (recipe ")
    assert _meta(instance, "reward_model")["synthetic-rm/origin"].value.startswith("shipped micro/reward_models/")
    world = Path(__file__).resolve().parents[1] / "data" / "world" / "micro"
    assert (ms.store / "artifacts" / "base_model" / "micro-qwen" / "model" / "model.safetensors").read_bytes() == \
        (world / "students" / "micro-qwen" / "model" / "model.safetensors").read_bytes()
    samples = _meta(instance, "native_samples")
    assert samples["generated"].value == 60 * 4 and samples["cache_hits"].value == 0
    capsys.readouterr()
    assert main(["sql", "select model_family, count(*) n, bool_and(correct) ok from native_traces group by 1", "--format", "json"]) == 0
    out = capsys.readouterr().out
    assert '"model_family":"micro-qwen"' in out and '"ok":true' in out

    # Every variant covers exactly the native problem ids and joins with native_traces.
    assert main(["sql", "select v.model_family, count(*) n, count(distinct v.problem_id) ids from native_traces n "
                 "join style_aligned_traces v using (model_family, problem_id) group by 1", "--format", "json"]) == 0
    joined = capsys.readouterr().out
    native_n = _meta(instance, "native_traces")["dagster/row_count"].value
    assert f'"n":{native_n}' in joined
    for v in ["oracle_refined", "oracle_synthesized", "reference", "style_aligned"]:
        meta = _meta(instance, f"{v}_traces")
        assert meta["dagster/row_count"].value == native_n
        assert "| native | variant |" in meta["examples"].value
    common = _meta(instance, "common_problems")
    assert common["common_fraction"].value >= 0.5
    assert main(["sql", "select avg(edit_distance) d from style_aligned_traces union all "
                 "select avg(edit_distance) from oracle_synthesized_traces", "--format", "json"]) == 0
    aligned_d, synth_d = [r["d"] for r in __import__("json").loads(capsys.readouterr().out)]
    assert aligned_d < synth_d

    # Perceived quality and adaptation cost side by side, per family and variant.
    union = " union all ".join(
        f"select '{v}' variant, (select avg(score) from {v}_rewards where reward_model = 'synthetic-rm') reward, "
        f"(select exp(sum(nll) / sum(n_tokens)) from {v}_adaptation) ppl"
        for v in ["native", "oracle_refined", "oracle_synthesized", "reference", "style_aligned"])
    assert main(["sql", union, "--format", "json"]) == 0
    side = {r["variant"]: r for r in __import__("json").loads(capsys.readouterr().out)}
    assert side["oracle_synthesized"]["reward"] > side["native"]["reward"]  # the RM prefers the Oracle
    assert side["oracle_synthesized"]["ppl"] > side["style_aligned"]["ppl"]  # the student does not
    assert _meta(instance, "reward_model")["synthetic-rm/heldout_pair_accuracy"].value > 0.5
    # The world's process RM: its ProcessBench F1 on the world's solutions near the published one it is calibrated to
    assert abs(_meta(instance, "reward_model")["process-rm/f1"].value - 82.4) < 3
    assert "process-rm/p_correct_over_wrong" in _meta(instance, "rm_diagnostics")
    assert "| token |" in _meta(instance, "oracle_refined_adaptation")["loss_attribution"].value

    # Utility: every variant has sft and dft checkpoints and Avg@k with a CI per benchmark and objective.
    for v in variants.names():
        ck = pd.read_parquet(ms.store / "tables" / f"{v}_checkpoints" / "micro-qwen.parquet")
        assert sorted(ck["objective"]) == ["dft", "sft"] and (ck["eos_rate"] > 0).all()
        assert (ck["examples"] + ck["dropped_overlength"] == common["dagster/row_count"].value).all()
        assert "data:image/png;base64" in _meta(instance, f"{v}_checkpoints")["loss_curves"].value
    assert main(["sql", "select objective, benchmark, k, avg_at_k, ci_low, ci_high, n_problems from native_eval "
                 "union all select objective, benchmark, k, avg_at_k, ci_low, ci_high, n_problems from base_eval",
                 "--format", "json"]) == 0
    rows = __import__("json").loads(capsys.readouterr().out)
    assert {(r["objective"], r["benchmark"]) for r in rows} == {
        (o, b) for o in ("none", "sft", "dft") for b in ("synth-micro", "macro")}
    assert all(r["k"] == 2 and r["n_problems"] == 20 and r["ci_low"] <= r["avg_at_k"] <= r["ci_high"] for r in rows)
    from transformers import AutoModelForCausalLM as _LM

    assert _LM.from_pretrained(ms.store / ck.loc[ck["objective"] == "dft", "checkpoint"].iloc[0]).num_parameters() > 100_000

    # The report: files on disk, the verdict computed from the numbers, the table in the UI metadata.
    report = ms.store / "report"
    for name in ["report.md", "report.html", "table1.csv", "table2.csv", "correlations.csv", "reward_vs_accuracy.png"]:
        assert (report / name).stat().st_size > 0
    t1 = pd.read_csv(report / "table1.csv")
    assert list(t1["variant"]) == ["base", *variants.names()]
    native_eval = pd.read_parquet(ms.store / "tables" / "native_eval" / "micro-qwen.parquet")
    macro = native_eval[(native_eval["benchmark"] == "macro") & (native_eval["objective"] == "dft")]
    assert t1.loc[t1["variant"] == "native", "avg_at_k_dft"].iloc[0] == pytest.approx(macro["avg_at_k"].iloc[0])
    rmeta = _meta(instance, "paradox_report")
    assert "Spearman rho" in rmeta["verdict"].value and "| Oracle-Synthesized |" in rmeta["table1"].value
    assert "data:image/png;base64" in rmeta["report"].value
    assert main(["report", "--study", str(ms.study)]) == 0
    assert "Table 1" in capsys.readouterr().out

    # A forced re-run of sampling is served from the cache.
    assert main(["run", "--study", str(ms.study), "--select", "key:native_samples or key:native_traces"]) == 0
    samples2 = _meta(instance, "native_samples")
    assert samples2["cache_hits"].value == 240 and samples2["generated"].value == 0
    store = ms.store / "tables"
    first = pd.read_parquet(store / "native_samples" / "micro-qwen.parquet")
    assert len(first) == 240 and first["problem_id"].nunique() == 60
    # The model folder is a normal HF folder that loads and generates.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = _meta(instance, "base_model")["model_path"].value
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
    ids = tok.apply_chat_template([{"role": "user", "content": "Mia has 3 apples."}], add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    assert model.generate(ids, max_new_tokens=5, do_sample=False).shape[1] > ids.shape[1]


def _kill_mid_run(proc: subprocess.Popen) -> str:
    """SIGKILL the run worker of the run a `qup run` is following, as the OOM killer would: Dagster (the code
    server that started the worker) marks the run failed, and `qup run` exits 1. Returns the run's id.
    (The health check that run monitoring uses when the code server is gone too: test_orchestration.py.)"""
    from qup_assets.orchestration.launcher import worker_pid

    instance = dg.DagsterInstance.get()
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    assert len(runs) == 1 and proc.poll() is None, f"no run to kill: qup exited {proc.returncode}"
    pid = worker_pid(instance, runs[0].run_id)
    os.kill(pid, signal.SIGKILL)
    assert proc.wait(timeout=120) == 1
    failed = instance.get_run_by_id(runs[0].run_id)
    assert failed.status == dg.DagsterRunStatus.FAILURE
    why = [e.message for e in instance.all_logs(failed.run_id) if e.is_dagster_event and e.message]
    # whichever sees it first says so: the code server that started the worker, or run monitoring's check
    said = ("terminated by signal 9 (SIGKILL)", "died (killed, or out of memory)")
    assert any(s in m for m in why for s in said), why[-3:]
    return failed.run_id


def _slots_freed(run_id: str) -> bool:
    """The dead run holds no `accelerator` pool slot once run monitoring has freed them."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        instance = dg.DagsterInstance.get()  # held: the storage reaches its instance through a weak reference
        info = instance.event_log_storage.get_concurrency_info("accelerator")
        if not [s for s in info.claimed_slots if s.run_id == run_id]:
            return True
        time.sleep(1)
    return False


def _cache_lines(store: Path) -> int:
    return sum(len(p.read_bytes().splitlines()) for p in (store / "cache").rglob("shard-*.jsonl"))


@pytest.mark.slow
def test_sigkill_during_sampling_resumes_from_finished_work(micro_study, monkeypatch):
    # The session's problems and student, more samples, an empty response cache: sampling starts from zero.
    ms = micro_study.copy(micro_study.root.parent / "crash-sampling").env(monkeypatch)
    study, store = ms.study, ms.store
    text = study.read_text()
    assert "sampling: {n: 4," in text
    study.write_text(text.replace("sampling: {n: 4,", "sampling: {n: 24,"))
    import shutil

    shutil.rmtree(store / "cache")
    table = store / "tables" / "native_samples" / "micro-qwen.parquet"
    old = table.read_bytes()
    total = 60 * 24
    # A pool limit as on a GPU machine (dagster.yaml sets none on CPU), so the run holds a slot when it dies.
    instance = dg.DagsterInstance.get()  # held: the storage reaches its instance through a weak reference
    instance.event_log_storage.set_concurrency_slots("accelerator", 2)
    cmd = [sys.executable, "-m", "qup_assets.cli", "run", "--study", str(study), "--select", "key:native_samples"]
    proc = subprocess.Popen(cmd, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and _cache_lines(store) < total // 3 and proc.poll() is None:
        time.sleep(0.2)
    killed = _kill_mid_run(proc)
    finished = _cache_lines(store)
    assert 0 < finished < total
    # No partial result is visible: the table is still the one from before the kill.
    assert table.read_bytes() == old

    # The killed run held a `accelerator` pool slot: run monitoring frees it, and the re-run resumes.
    assert main(["run", "--study", str(study), "--select", "key:native_samples"]) == 0
    assert _slots_freed(killed)
    instance = dg.DagsterInstance.get()
    assert not instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    meta = _meta(instance, "native_samples")
    hits = meta["cache_hits"].value
    assert hits >= finished - 64  # every complete chunk is reused (a torn last chunk is redone)
    assert hits + meta["generated"].value == total
    resumed = pd.read_parquet(store / "tables" / "native_samples" / "micro-qwen.parquet")

    # An uninterrupted run with the same seed, from an empty cache, gives the same table.
    import shutil

    shutil.rmtree(store / "cache")
    assert main(["run", "--study", str(study), "--select", "key:native_samples"]) == 0
    assert _meta(dg.DagsterInstance.get(), "native_samples")["cache_hits"].value == 0
    fresh = pd.read_parquet(store / "tables" / "native_samples" / "micro-qwen.parquet")
    pd.testing.assert_frame_equal(resumed, fresh)


def _materializations(instance) -> dict:
    """(asset, partition) -> number of materializations recorded by the instance."""
    counts: dict = {}
    for asset in instance.get_asset_keys():
        result = instance.fetch_materializations(asset, limit=10_000)
        for rec in result.records:
            k = (asset.path[-1], rec.partition_key)
            counts[k] = counts.get(k, 0) + 1
    return counts


@pytest.mark.slow
def test_adding_a_family_materializes_only_its_partition_and_refreshes_the_report(micro_study, monkeypatch, capsys):
    ms = micro_study.copy(micro_study.root.parent / "add-family").env(monkeypatch)
    instance = dg.DagsterInstance.get()
    before = _materializations(instance)
    ms.study.write_text(with_second_family(ms.study.read_text()))  # micro-llama: a smaller student, shipped
    assert main(["families", "sync", "--study", str(ms.study)]) == 0
    assert "added: ['micro-llama']" in capsys.readouterr().out
    assert main(["run", "--study", str(ms.study), "--family", "micro-llama"]) == 0
    after = _materializations(instance)
    new = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    partitioned = {a for a, p in before if p == "micro-qwen"}
    assert {a for a, p in new if p == "micro-llama"} == partitioned  # every per-family asset, once
    assert all(n == 1 for (a, p), n in new.items())
    assert not [k for k in new if k[1] == "micro-qwen"]  # the existing family is not recomputed
    assert {k for k in new if k[1] is None} == {("paradox_report", None)}  # shared roots reused, report refreshed
    t1 = pd.read_csv(ms.store / "report" / "table1.csv")
    assert set(t1["model_family"]) == {"micro-qwen", "micro-llama"}
    assert "pooled" in set(pd.read_csv(ms.store / "report" / "correlations.csv")["scope"])

    # A family removed from the study file keeps its data, and the report lists it as excluded, never pooled.
    with_llama = ms.study.read_text()
    ms.study.write_text(with_llama.replace(with_llama[with_llama.index("  micro-llama:"):with_llama.index("  micro-qwen:")], ""))
    assert main(["run", "--study", str(ms.study), "--select", "key:paradox_report"]) == 0
    t1 = pd.read_csv(ms.store / "report" / "table1.csv")
    assert set(t1["model_family"]) == {"micro-qwen"}
    assert "Excluded: micro-llama (removed from the study file" in (ms.store / "report" / "report.md").read_text()
    assert _meta(instance, "paradox_report")["excluded_families"].value == "micro-llama"
    assert (ms.store / "tables" / "native_eval" / "micro-llama.parquet").is_file()  # its data is kept
    ms.study.write_text(with_llama)

    # Both families' partitions at once: a qup run (two family runs through the queue) beside a run outside qup
    # (dagster asset materialize) of another asset of one of the families, on one instance and store, and `qup
    # sql` reading the tables while they are written. (Two of each took ~60 s more of CI for the same property.)
    env = dict(os.environ, QUP_STUDY=str(ms.study))
    pools_before = instance.event_log_storage.get_concurrency_info("accelerator")
    procs = [subprocess.Popen([sys.executable, "-m", "qup_assets.cli", "run", "--study", str(ms.study), "--force",
                               "--select", "key:native_samples or key:native_rewards"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)]
    procs += [subprocess.Popen([sys.executable, "-m", "dagster", "asset", "materialize", "-m", "qup_assets.definitions",
                                "--select", "micro/native_adaptation", "--partition", fam], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
              for fam in ("micro-llama",)]
    sql = [sys.executable, "-m", "qup_assets.cli", "sql",
           "select (select count(*) from native_samples) s, (select count(*) from native_rewards) r"]
    reads = 0
    while True:  # at the pace of a person (a reader that spins holds the core the runs need): a second between
        read = subprocess.run(sql, capture_output=True, text=True, env=env, timeout=120)
        assert read.returncode == 0, read.stderr
        reads += 1
        pending = [p for p in procs if p.poll() is None]
        if not pending:
            break
        try:
            pending[0].wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass
    assert reads >= 1
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0 and "database is locked" not in out, out[-3000:]
    assert "== queued micro-qwen" in outs[0] and "== queued micro-llama" in outs[0]
    # qup run no longer rewrites pool limits: the instance's own, the same for UI runs
    pools_after = instance.event_log_storage.get_concurrency_info("accelerator")
    assert (pools_after.slot_count, pools_after.using_default_limit) == (pools_before.slot_count,
                                                                         pools_before.using_default_limit)
    for fam in ("micro-qwen", "micro-llama"):
        s = pd.read_parquet(ms.store / "tables" / "native_samples" / f"{fam}.parquet")
        assert len(s) == 240 and not s.duplicated(["problem_id", "sample_idx"]).any()
        a = pd.read_parquet(ms.store / "tables" / "native_adaptation" / f"{fam}.parquet")
        assert a["problem_id"].is_unique and (a["model_family"] == fam).all()

    # Alone, the two family runs compute their `accelerator`-pool steps at the same time: the queue lets them both
    # go and the pool has no limit on this CPU instance (dagster.yaml), each run with one torch thread.
    assert main(["run", "--study", str(ms.study), "--force", "--select", "key:native_adaptation"]) == 0
    # what this process may use, asked of the OS (one core per test worker under pytest -n 2): two runs share it
    cores = len(os.sched_getaffinity(0))
    assert f"torch threads: {max(1, cores // 2)} (of {cores} cores)" in capsys.readouterr().out
    spans = [_step_span(instance, "native_adaptation", fam) for fam in ("micro-qwen", "micro-llama")]
    assert max(s[0] for s in spans) < min(s[1] for s in spans), spans


def _step_span(instance, asset: str, family: str) -> tuple[float, float]:
    """(start, end) of the step that wrote the latest materialization of asset[family]."""
    rec = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key(asset), asset_partitions=[family]), limit=1).records[0]
    times = {e.dagster_event_type: e.timestamp for e in instance.all_logs(rec.run_id)
             if e.is_dagster_event and e.step_key == asset}
    return times[dg.DagsterEventType.STEP_START], times[dg.DagsterEventType.STEP_SUCCESS]


@pytest.mark.slow
def test_a_failing_family_fails_the_parallel_run_and_the_other_family_still_finishes(micro_study, monkeypatch, capsys):
    ms = micro_study.copy(micro_study.root.parent / "failing-child").env(monkeypatch)
    ms.study.write_text(ms.study.read_text().replace(
        "families:\n", "families:\n  micro-broken:\n    student: {kind: hf, model: /nonexistent/model}\n"))
    instance = dg.DagsterInstance.get()
    before = _materializations(instance)
    # micro-broken has no samples to verify: its child fails; micro-qwen's child is not stopped by it
    assert main(["run", "--study", str(ms.study), "--force", "--select", "key:native_traces"]) == 1
    captured = capsys.readouterr()
    assert "family micro-broken FAILED" in captured.err and "study micro: FAILED" in captured.out
    after = _materializations(instance)
    assert after[("native_traces", "micro-qwen")] == before[("native_traces", "micro-qwen")] + 1
    assert ("native_traces", "micro-broken") not in after


def _trained_epochs(folder: Path):
    try:
        return __import__("json").loads((folder / "qup_training.json").read_text())["job"]["epochs"]
    except (OSError, ValueError, KeyError):
        return None


@pytest.mark.slow
def test_sigkill_during_training_reuses_finished_checkpoints(micro_study, monkeypatch):
    ms = micro_study.copy(micro_study.root.parent / "crash-training").env(monkeypatch)
    # Longer training so the kill lands between the two checkpoints (the study change makes them outdated).
    ms.study.write_text(ms.study.read_text().replace("epochs: 1,", "epochs: 24,"))
    table = ms.store / "tables" / "native_checkpoints" / "micro-qwen.parquet"
    before = table.read_bytes()
    ck = ms.store / "artifacts" / "native_checkpoints" / "micro-qwen"
    cmd = [sys.executable, "-m", "qup_assets.cli", "run", "--study", str(ms.study), "--select", "key:native_checkpoints"]
    proc = subprocess.Popen(cmd, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and _trained_epochs(ck / "sft") != 24 and proc.poll() is None:
        time.sleep(0.05)
    _kill_mid_run(proc)
    assert _trained_epochs(ck / "sft") == 24  # killed after the first checkpoint was published
    # No partial result is visible: the table is the old one, and dft is the old folder or a hidden temp one.
    assert table.read_bytes() == before
    assert _trained_epochs(ck / "dft") != 24

    assert main(["run", "--study", str(ms.study), "--select", "key:native_checkpoints"]) == 0
    meta = _meta(dg.DagsterInstance.get(), "native_checkpoints")
    assert meta["reused_checkpoints"].value == 1  # sft was finished before the kill: reused, not retrained
    resumed = pd.read_parquet(table)
    assert not [p for p in ck.iterdir() if p.name.startswith(".")]  # temp folders cleaned up

    # An uninterrupted run with the same seed, from scratch, gives the same table (timings aside).
    import shutil

    shutil.rmtree(ck)
    assert main(["run", "--study", str(ms.study), "--select", "key:native_checkpoints"]) == 0
    assert _meta(dg.DagsterInstance.get(), "native_checkpoints")["reused_checkpoints"].value == 0
    fresh = pd.read_parquet(table)
    cols = ["objective", "steps", "examples", "tokens_trained", "eos_rate", "checkpoint"]
    pd.testing.assert_frame_equal(resumed[cols], fresh[cols])
    assert resumed["train_loss"].tolist() == pytest.approx(fresh["train_loss"].tolist(), rel=1e-5)


@pytest.mark.slow
def test_sigkill_during_an_oracle_pass_resumes_from_cached_rewrites(micro_study, monkeypatch):
    """An LLM Oracle (the micro student itself, through the transformers backend) killed mid-study."""
    ms = micro_study.copy(micro_study.root.parent / "crash-oracle").env(monkeypatch)
    model = ms.store / "artifacts" / "base_model" / "micro-qwen" / "model"
    ms.study.write_text(ms.study.read_text().replace(
        "oracle: {kind: symbolic}",
        f"oracle: {{kind: llm, model: '{model}', min_verified_share: 0, backend: {{kind: transformers, batch_size: 8}}, max_tokens: 160, "
        "max_retries: 0, temperature: 1.0}"))
    select = "key:oracle_refined_traces or key:oracle_synthesized_traces or key:style_aligned_traces"
    store = ms.store
    before = _cache_lines(store)
    tables = {v: store / "tables" / f"{v}_traces" / "micro-qwen.parquet"
              for v in ("oracle_refined", "oracle_synthesized", "style_aligned")}
    old = {v: p.read_bytes() for v, p in tables.items()}
    cmd = [sys.executable, "-m", "qup_assets.cli", "run", "--study", str(ms.study), "--select", select]
    proc = subprocess.Popen(cmd, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and _cache_lines(store) == before and proc.poll() is None:
        time.sleep(0.05)  # until the first Oracle pass is cached
    _kill_mid_run(proc)
    cached = _cache_lines(store) - before
    assert cached > 0
    # Each table is either the old one or a complete new one, never a partial file.
    for v, p in tables.items():
        df = pd.read_parquet(p)
        assert p.read_bytes() == old[v] or df["oracle"].str.startswith("llm:").all()

    assert main(["run", "--study", str(ms.study), "--select", select]) == 0
    instance = dg.DagsterInstance.get()
    hits = sum(_meta(instance, f"{v}_traces")["oracle_cache_hits"].value for v in tables)
    assert hits >= cached  # every rewrite finished before the kill is reused, not regenerated
    resumed = {v: pd.read_parquet(p) for v, p in tables.items()}

    import shutil

    shutil.rmtree(store / "cache")
    assert main(["run", "--study", str(ms.study), "--select", select]) == 0
    for v, p in tables.items():
        assert _meta(dg.DagsterInstance.get(), f"{v}_traces")["oracle_cache_hits"].value == 0
        pd.testing.assert_frame_equal(resumed[v], pd.read_parquet(p))
