"""The `qup` command line on real Dagster instances: run, families, plan, verify, and what counts as out of date."""

import json

import dagster as dg

from qup_assets.cli import main, outdated
from qup_assets.study import resolve_study_path

from .helpers import key, write_study

FAMILIES = dg.StaticPartitionsDefinition(["fam-a", "fam-b"])


def _defs(per_family_version: str = "1") -> dg.Definitions:
    @dg.asset(code_version="1")
    def pool() -> int:
        return 1

    @dg.asset(code_version=per_family_version, partitions_def=FAMILIES)
    def samples(pool: int) -> int:
        return pool + 1

    @dg.asset(code_version="1", partitions_def=FAMILIES)
    def scores(samples: int) -> int:
        return samples + 1

    return dg.Definitions(assets=[pool, samples, scores])


def _stale(defs, instance, family):
    graph = defs.resolve_asset_graph()
    keys = [k for k in graph.toposorted_asset_keys if graph.get(k).partitions_def is not None]
    return [k.to_user_string() for k in outdated(graph, instance, keys, family)]


def _materialize(defs, instance, names, family=None):
    assets = [a for a in defs.assets if a.key.to_user_string() in names]
    others = [a for a in defs.assets if a.key.to_user_string() not in names]
    result = dg.materialize(assets + [a.to_source_asset() for a in others], instance=instance, partition_key=family)
    assert result.success


def test_nothing_is_outdated_after_a_full_run_and_missing_partitions_are():
    with dg.instance_for_test() as instance:
        defs = _defs()
        _materialize(defs, instance, {"pool"})
        assert _stale(defs, instance, "fam-a") == ["samples", "scores"]  # never materialized
        for fam in ("fam-a", "fam-b"):
            _materialize(defs, instance, {"samples", "scores"}, fam)
        assert _stale(defs, instance, "fam-a") == [] and _stale(defs, instance, "fam-b") == []
        graph = defs.resolve_asset_graph()
        assert outdated(graph, instance, [dg.AssetKey("pool")], None) == []


def test_a_code_version_change_reruns_the_asset_and_its_descendants_in_each_family_separately():
    with dg.instance_for_test() as instance:
        v1 = _defs("1")
        _materialize(v1, instance, {"pool"})
        for fam in ("fam-a", "fam-b"):
            _materialize(v1, instance, {"samples", "scores"}, fam)
        v2 = _defs("2")  # samples' code (or the study section it reads) changed
        assert _stale(v2, instance, "fam-a") == ["samples", "scores"]
        assert _stale(v2, instance, "fam-b") == ["samples", "scores"]
        _materialize(v2, instance, {"samples", "scores"}, "fam-a")
        assert _stale(v2, instance, "fam-a") == []
        assert _stale(v2, instance, "fam-b") == ["samples", "scores"]  # the other family is untouched
        graph = v2.resolve_asset_graph()
        assert outdated(graph, instance, [dg.AssetKey("pool")], None) == []  # nothing upstream moves


def test_a_newer_parent_makes_every_family_outdated_but_not_its_parent():
    with dg.instance_for_test() as instance:
        defs = _defs()
        _materialize(defs, instance, {"pool"})
        for fam in ("fam-a", "fam-b"):
            _materialize(defs, instance, {"samples", "scores"}, fam)
        _materialize(defs, instance, {"scores"}, "fam-a")  # a newer child does not make its parent stale
        assert _stale(defs, instance, "fam-a") == []
        _materialize(defs, instance, {"pool"})  # the shared root was recomputed
        assert _stale(defs, instance, "fam-a") == ["samples", "scores"]
        assert _stale(defs, instance, "fam-b") == ["samples", "scores"]


def test_qup_run_materializes_problems_with_metadata(isolated, capsys):
    assert main(["run", "--study", "micro", "--select", "group:problems"]) == 0
    out = capsys.readouterr().out
    assert "study micro: done" in out and "report:" in out
    instance = dg.DagsterInstance.get()
    assert instance.get_dynamic_partitions("micro_model_family") == ["micro-qwen"]
    for name, rows in [("problem_pool", 60), ("benchmarks", None)]:
        event = instance.get_latest_materialization_event(key(name))
        meta = event.asset_materialization.metadata
        assert {"dagster/row_count", "rejected_by_reason", "sample"} <= set(meta), name
        if rows:
            assert meta["dagster/row_count"].value == rows
    # The runs are in the instance the UI reads.
    assert len(instance.get_runs()) >= 1

    assert main(["sql", "--study", "micro", "select count(*) as n from problem_pool", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 60}]
    assert main(["sql", "--study", "micro", "select benchmark, count(*) n from benchmarks group by 1", "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("benchmark,n\nsynth-micro,")
    assert main(["sql", "--study", "micro", "select * from no_such_table"]) == 1
    assert "tables of study 'micro' in" in capsys.readouterr().err


def test_qup_run_reports_bad_problem_files(isolated, tmp_path, capsys):
    bad = tmp_path / "garbage.jsonl"
    bad.write_text('{"problem": "no answer anywhere", "solution": "none"}\nnot json\n')
    study = write_study(
        tmp_path / "bad.yaml",
        f"name: bad\nproblems: {{kind: local, path: {bad}}}\n"
        "benchmarks: [{name: b, source: {kind: synthetic, size: 5}}]\n"
        "families: {f: {student: {kind: synthetic, style: qwen}}}\n",
    )
    assert main(["run", "--study", str(study)]) == 1
    assert "no usable problems remain out of 2 rows" in capsys.readouterr().err


def test_families_sync_list_and_removal_keeps_partitions(isolated, tmp_path, capsys):
    text = resolve_study_path("micro").read_text()
    study = write_study(tmp_path / "s.yaml", text)
    assert main(["families", "list", "--study", str(study)]) == 0
    assert "micro-qwen\tmissing" in capsys.readouterr().out
    assert main(["families", "sync", "--study", str(study)]) == 0
    assert "added: ['micro-qwen']" in capsys.readouterr().out
    write_study(study, text.replace("micro-qwen:", "micro-llama:"))
    assert main(["families", "sync", "--study", str(study)]) == 0
    out = capsys.readouterr().out
    assert "micro-llama\tpartition" in out and "micro-qwen\tpartition only" in out
    assert set(dg.DagsterInstance.get().get_dynamic_partitions("micro_model_family")) == {"micro-qwen", "micro-llama"}


def test_plan_sizes_the_paper_study(isolated, capsys):
    assert main(["plan", "--study", "paper"]) == 0
    out = capsys.readouterr().out
    assert "qwen2.5-math-1.5b" in out and "backend=vllm" in out
    # 100K problems x N=8 x 4 families
    assert "3,200,000" in out
    # 5 variants x 2 objectives x 4 grid points = 40 checkpoints per family, 160 in all
    assert "fine-tuned checkpoints" in out and " 160" in out


def test_qup_verify_prints_json(capsys):
    assert main(["verify", "1/2", "so \\boxed{\\frac{2}{4}}"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["verdict"] == "correct" and res["extracted"] == "\\frac{2}{4}"
    assert main(["verify", "3", "\\boxed{9^9^9^9}"]) == 1
    assert json.loads(capsys.readouterr().out)["verdict"] == "rejected"


def test_run_rejects_unknown_family(isolated, capsys):
    assert main(["run", "--study", "micro", "--family", "nope"]) == 2
    assert "not in study" in capsys.readouterr().err


def test_a_second_study_file_with_the_same_name_is_refused_before_anything_is_written(isolated, tmp_path, capsys):
    first = write_study(tmp_path / "first.yaml", resolve_study_path("micro").read_text())
    assert main(["run", "--study", str(first), "--select", "key:problem_pool"]) == 0
    store = isolated / "store"
    before = {p: p.stat().st_mtime_ns for p in store.rglob("*")}
    other = write_study(tmp_path / "other.yaml", first.read_text().replace("size: 60,", "size: 30,"))
    capsys.readouterr()
    assert main(["run", "--study", str(other), "--select", "key:problem_pool"]) == 2
    err = capsys.readouterr().err
    assert "study name 'micro'" in err and "already belongs to" in err and str(first) in err
    assert {p: p.stat().st_mtime_ns for p in store.rglob("*")} == before  # not a byte written
    assert main(["plan", "--study", str(other)]) == 2  # every command that builds the study refuses it


def test_a_store_with_the_old_layout_is_refused_with_the_migrate_command(isolated, capsys):
    (isolated / "store" / "tables" / "problem_pool").mkdir(parents=True)
    assert main(["run", "--study", "micro"]) == 2
    assert "qup store migrate --study NAME" in capsys.readouterr().err
