"""Studies never mix: two studies in one store and one instance, in both orders and at the same time.

Cost: the smaller study runs twice; micro's own run is the session's, and here only its shared assets
(one order) and its family graph from native_traces down (at the same time as the other study) run again.

Each study's tables, report files and verdict must equal those of a run alone, and running one study
must not change a byte of the other's folder or a record of its asset history. The smaller study even
reuses micro's family name (micro-qwen), which only its namespace keeps apart.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from qup_assets.cli import main
from qup_assets.study import resolve_study_path

# Columns that differ between two identical runs by nature: absolute paths and timings.
VOLATILE = {"path", "wall_time_s"}


def small_study_text() -> str:
    text = resolve_study_path("micro").read_text()
    for old, new in [("name: micro", "name: micro_small"), ("size: 60, seed: 7", "size: 30, seed: 8"),
                     ("size: 20, seed: 70", "size: 10, seed: 80"),
                     ("hidden_size: 128, num_layers: 2, pretrain_problems: 1500, pretrain_steps: 300",
                      "hidden_size: 96, num_layers: 2, pretrain_problems: 1000, pretrain_steps: 160"),
                     ("train_problems: 400, train_steps: 80", "train_problems: 150, train_steps: 20"),
                     ("objectives: [sft, dft]", "objectives: [sft]")]:
        assert old in text, old
        text = text.replace(old, new)
    return text


def _stable(value):
    """A JSON value without its absolute paths and timings (at any depth)."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE | {"files", "store_path"}}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def results_of(store_root: Path, study: str) -> dict:
    """The tables of a study that has not run to its report yet."""
    base = store_root / "studies" / study
    out = {}
    for f in sorted((base / "tables").rglob("*.parquet")):
        df = pd.read_parquet(f)
        out[str(f.relative_to(base))] = df.drop(columns=[c for c in df.columns if c in VOLATILE])
    for f in sorted((base / "tables").rglob("*.json")):
        out[str(f.relative_to(base))] = _stable(json.loads(f.read_text()))
    return out


def results(store_root: Path, study: str) -> dict:
    """What a researcher reads of one study: every table (volatile columns aside), the report's CSVs and verdict."""
    base = store_root / "studies" / study
    out = results_of(store_root, study)
    for name in ("table1.csv", "table2.csv", "correlations.csv", "differences.csv", "verdict.json", "headline.txt"):
        out[f"report/{name}"] = (base / "report" / name).read_text()
    return out


def assert_same(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for k in a:
        if isinstance(a[k], pd.DataFrame):
            pd.testing.assert_frame_equal(a[k], b[k], obj=k)
        else:
            assert a[k] == b[k], k


def files(store_root: Path, study: str) -> dict:
    """Every byte of a study's folder."""
    base = store_root / "studies" / study
    return {str(p.relative_to(base)): p.read_bytes() for p in base.rglob("*") if p.is_file()}


def history(home: Path, study: str) -> dict:
    """(asset, partition) -> materialization count of one study's assets in the instance."""
    saved = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        with dg.DagsterInstance.get() as instance:
            counts = {}
            for key in instance.get_asset_keys(prefix=[study]):
                for rec in instance.fetch_materializations(key, limit=10_000).records:
                    counts[(key.to_user_string(), rec.partition_key)] = counts.get((key.to_user_string(), rec.partition_key), 0) + 1
            return counts
    finally:
        if saved is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = saved


class Place:
    """A store and a Dagster home, empty or copied from another."""

    def __init__(self, root: Path, like: Path | None = None):
        if like is not None:
            shutil.copytree(like, root)
        self.root, self.store, self.home = root, root / "store", root / "dagster_home"
        self.home.mkdir(parents=True, exist_ok=True)
        cfg = Path(__file__).resolve().parent.parent / "dagster.yaml"
        (self.home / "dagster.yaml").write_text(cfg.read_text())

    def env(self) -> dict:
        return dict(os.environ, QUP_STORE=str(self.store), DAGSTER_HOME=str(self.home))

    def run(self, study: Path, monkeypatch) -> None:
        monkeypatch.setenv("QUP_STORE", str(self.store))
        monkeypatch.setenv("DAGSTER_HOME", str(self.home))
        assert main(["run", "--study", str(study)]) == 0


@pytest.fixture(scope="module")
def small_alone(tmp_path_factory):
    """The smaller study run alone in its own store and instance: the reference for every mixed run."""
    root = tmp_path_factory.mktemp("small-alone")
    study = root / "micro_small.yaml"
    study.write_text(small_study_text())
    place = Place(root / "place")
    out = subprocess.run([sys.executable, "-m", "qup_assets.cli", "run", "--study", str(study)], env=place.env(),
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return study, place


@pytest.mark.slow
def test_a_second_study_run_after_the_first_changes_none_of_its_bytes(micro_study, small_alone, tmp_path, monkeypatch):
    """micro first (the session's study, run alone), then the smaller one into the same store and instance."""
    small, alone = small_alone
    first = Place(tmp_path / "micro-then-small", like=micro_study.root)
    micro_bytes, micro_history = files(first.store, "micro"), history(first.home, "micro")
    first.run(small, monkeypatch)
    assert files(first.store, "micro") == micro_bytes and history(first.home, "micro") == micro_history
    assert_same(results(first.store, "micro_small"), results(alone.store, "micro_small"))
    instance = dg.DagsterInstance.get()
    assert instance.get_dynamic_partitions("micro_model_family") == ["micro-qwen"]
    assert instance.get_dynamic_partitions("micro_small_model_family") == ["micro-qwen"]  # same name, apart
    for study in ("micro", "micro_small"):  # each report is about its own study only
        t1 = pd.read_csv(first.store / "studies" / study / "report" / "table1.csv")
        assert set(t1["model_family"]) == {"micro-qwen"}
        md = (first.store / "studies" / study / "report" / "report.md").read_text()
        assert md.startswith(f"# The Quality-Utility Paradox: study `{study}`") and "Excluded:" not in md


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
def test_two_studies_writing_at_the_same_time(micro_study, small_alone, tmp_path):
    """The smaller study from scratch while micro recomputes its whole family graph (--force from native_traces
    down: Oracle rewrites, rewards, perplexities, checkpoints, evals, report) in the same store and instance."""
    small, alone = small_alone
    both = Place(tmp_path / "both", like=micro_study.root)
    runs = [(micro_study.study, ["--force", "--select", "key:native_traces+"]), (small, [])]
    procs = [subprocess.Popen([sys.executable, "-m", "qup_assets.cli", "run", "--study", str(study), *extra],
                              env=both.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for study, extra in runs]
    outs = [p.communicate(timeout=1200)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0 and "database is locked" not in out, out[-3000:]
    assert "paradox_report" in outs[0]  # micro did rewrite down to its report while the other study ran
    assert_same(results(both.store, "micro"), results(micro_study.store_root, "micro"))
    assert_same(results(both.store, "micro_small"), results(alone.store, "micro_small"))


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
