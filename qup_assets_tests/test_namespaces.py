"""Studies never mix: two studies in one store and one instance, in both orders and at the same time.

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
                      "hidden_size: 48, num_layers: 1, pretrain_problems: 400, pretrain_steps: 80"),
                     ("train_problems: 400, train_steps: 80", "train_problems: 150, train_steps: 20"),
                     ("objectives: [sft, dft]", "objectives: [sft]")]:
        assert old in text, old
        text = text.replace(old, new)
    return text


def results(store_root: Path, study: str) -> dict:
    """What a researcher reads of one study: every table (volatile columns aside), the report's CSVs and verdict."""
    base = store_root / "studies" / study
    out = {}
    for f in sorted((base / "tables").rglob("*.parquet")):
        df = pd.read_parquet(f)
        out[str(f.relative_to(base))] = df.drop(columns=[c for c in df.columns if c in VOLATILE])
    for f in sorted((base / "tables").rglob("*.json")):
        value = json.loads(f.read_text())
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in VOLATILE | {"files", "store_path"}}
        out[str(f.relative_to(base))] = value
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
def test_one_study_after_the_other_in_both_orders(micro_study, small_alone, tmp_path, monkeypatch):
    small, alone = small_alone
    micro_ref = results(micro_study.store_root, "micro")

    # micro first (the session's study), then the smaller one into the same store and instance
    first = Place(tmp_path / "micro-then-small", like=micro_study.root)
    micro_bytes, micro_history = files(first.store, "micro"), history(first.home, "micro")
    first.run(small, monkeypatch)
    assert files(first.store, "micro") == micro_bytes and history(first.home, "micro") == micro_history
    assert_same(results(first.store, "micro_small"), results(alone.store, "micro_small"))
    assert dg.DagsterInstance.get().get_dynamic_partitions("micro_model_family") == ["micro-qwen"]
    assert dg.DagsterInstance.get().get_dynamic_partitions("micro_small_model_family") == ["micro-qwen"]

    # the smaller one first, then micro
    second = Place(tmp_path / "small-then-micro", like=alone.root)
    small_bytes, small_history = files(second.store, "micro_small"), history(second.home, "micro_small")
    second.run(micro_study.study, monkeypatch)
    assert files(second.store, "micro_small") == small_bytes and history(second.home, "micro_small") == small_history
    assert_same(results(second.store, "micro"), micro_ref)

    # each report is about its own study only
    for place, study in ((first, "micro"), (first, "micro_small")):
        t1 = pd.read_csv(place.store / "studies" / study / "report" / "table1.csv")
        assert set(t1["model_family"]) == {"micro-qwen"}
        md = (place.store / "studies" / study / "report" / "report.md").read_text()
        assert md.startswith(f"# The Quality-Utility Paradox: study `{study}`") and "Excluded:" not in md


@pytest.mark.slow
def test_two_studies_at_the_same_time(micro_study, small_alone, tmp_path):
    small, alone = small_alone
    both = Place(tmp_path / "both")
    procs = [subprocess.Popen([sys.executable, "-m", "qup_assets.cli", "run", "--study", str(s)], env=both.env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for s in (micro_study.study, small)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0 and "database is locked" not in out, out[-3000:]
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
