"""Studies never mix: two studies in one store and one instance, in both orders and at the same time.

Cost: the smaller study runs once more than its reference run; micro's own run is the session's, and here only its
shared assets (one order) and its family graph from native_traces down (at the same time as the other study)
run again.

Each study's tables, report files and verdict must equal those of a run alone, and running one study
must not change a byte of the other's folder or a record of its asset history. The smaller study even
reuses micro's family name (micro-qwen), which only its namespace keeps apart.
"""

import shutil
import subprocess
import sys

import dagster as dg
import pandas as pd
import pytest

from qup_assets.cli import main

from .helpers import Place, assert_same, files, history, results, results_of


@pytest.mark.slow
def test_the_first_study_run_after_the_second_changes_none_of_its_bytes(micro_study, small_alone, tmp_path,
                                                                         monkeypatch):
    """The other order: the smaller study first, then micro's shared assets (problem_pool, benchmarks,
    reward_model: the ones that overwrote another study's before namespaces) into the same store."""
    small, alone = small_alone
    second = Place(tmp_path / "small-then-micro", like=alone.root)
    small_bytes, small_history = files(second.store, "micro_small"), history(second.home, "micro_small")
    monkeypatch.setenv("QUP_STORE", str(second.store))
    monkeypatch.setenv("DAGSTER_HOME", str(second.home))
    assert main(["run", "--study", str(micro_study.study), "--select", "group:problems or key:reward_model"]) == 0
    assert files(second.store, "micro_small") == small_bytes and history(second.home, "micro_small") == small_history
    mine, ref = results_of(second.store, "micro"), results_of(micro_study.store_root, "micro")
    assert set(mine) == {"tables/problem_pool/_unpartitioned.parquet", "tables/benchmarks/_unpartitioned.parquet",
                         "tables/reward_model/_unpartitioned.json"}
    assert_same(mine, {k: ref[k] for k in mine})


@pytest.mark.slow
def test_two_studies_writing_at_the_same_time(micro_study, small_alone, tmp_path, monkeypatch):
    """The smaller study from scratch while micro recomputes its whole family graph (--force from native_traces
    down: Oracle rewrites, rewards, perplexities, checkpoints, evals, report) in the same store and instance:
    each equals its run alone, keeps its own family partition of the same name, and reports only itself. (That a
    study's run changes no byte or history record of another's: the test above, the smaller study first.)"""
    small, alone = small_alone
    both = Place(tmp_path / "both", like=micro_study.root)
    runs = [(micro_study.study, ["--force", "--select", "key:native_traces+"]), (small, [])]
    procs = [subprocess.Popen([sys.executable, "-m", "qup_assets.cli", "run", "--study", str(study), *extra],
                              env=both.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for study, extra in runs]
    outs = [p.communicate(timeout=480)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0 and "database is locked" not in out, out[-3000:]
    assert "paradox_report" in outs[0]  # micro did rewrite down to its report while the other study ran
    assert_same(results(both.store, "micro"), results(micro_study.store_root, "micro"))
    assert_same(results(both.store, "micro_small"), results(alone.store, "micro_small"))
    monkeypatch.setenv("DAGSTER_HOME", str(both.home))
    instance = dg.DagsterInstance.get()
    assert instance.get_dynamic_partitions("micro_model_family") == ["micro-qwen"]
    assert instance.get_dynamic_partitions("micro_small_model_family") == ["micro-qwen"]  # same name, apart
    for study in ("micro", "micro_small"):  # each report is about its own study only
        t1 = pd.read_csv(both.store / "studies" / study / "report" / "table1.csv")
        assert set(t1["model_family"]) == {"micro-qwen"}
        md = (both.store / "studies" / study / "report" / "report.md").read_text()
        assert md.startswith(f"# The Quality-Utility Paradox: study `{study}`") and "Excluded:" not in md


@pytest.mark.slow
def test_a_store_from_before_namespaces_moves_with_one_command_and_nothing_is_recomputed(micro_study, tmp_path,
                                                                                       monkeypatch, capsys):
    ms = micro_study.copy(tmp_path / "old-layout").env(monkeypatch)
    reference = results(ms.store_root, "micro")
    # The old layout: tables, artifacts and cache at the store root, the report under reports/<name>, and
    # the asset history under keys without the study prefix.
    for d in ("tables", "artifacts", "cache"):
        shutil.move(ms.store / d, ms.store_root / d)
    (ms.store_root / "reports").mkdir()
    shutil.move(ms.store / "report", ms.store_root / "reports" / "micro")
    shutil.rmtree(ms.store_root / "studies")
    instance = dg.DagsterInstance.get()
    keys = instance.get_asset_keys(prefix=["micro"])
    for key in keys:
        parts = instance.get_materialized_partitions(key) or [None]
        for part in sorted(parts, key=str):
            f = dg.AssetRecordsFilter(asset_key=key, asset_partitions=[part] if part else None)
            m = instance.fetch_materializations(f, limit=1).records[0].asset_materialization
            instance.report_runless_asset_event(dg.AssetMaterialization(
                asset_key=dg.AssetKey(key.path[-1]), partition=part, metadata=m.metadata, tags=m.tags))
    instance.wipe_assets(keys)
    instance.delete_dynamic_partition("micro_model_family", "micro-qwen")

    capsys.readouterr()
    assert main(["run", "--study", str(ms.study)]) == 2  # refused, with the one command that fixes it
    assert "qup store migrate --study NAME" in capsys.readouterr().err
    assert main(["store", "migrate", "--study", str(ms.study)]) == 0
    out = capsys.readouterr().out
    assert "moved" in out and "recorded" in out
    before = history(ms.home, "micro")
    assert main(["run", "--study", str(ms.study)]) == 0
    assert history(ms.home, "micro") == before  # everything was up to date: nothing recomputed
    assert_same(results(ms.store_root, "micro"), reference)
