"""The Dagster layer and the `qup` command against a real instance in a temp DAGSTER_HOME."""

import json

import dagster as dg
import pytest

from qup_assets.assets.partitions import model_family
from qup_assets.assets.sensors import build_family_sensor
from qup_assets.cli import main
from qup_assets.definitions import build_definitions
from qup_assets.study import load_study, resolve_study_path

from .conftest import FIXTURES, write_study


def test_every_asset_is_documented_grouped_and_versioned():
    graph = build_definitions("micro").resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description and len(node.description) > 40, key
        assert node.group_name and node.group_name != "default", key
        assert node.code_version, key


def test_qup_run_materializes_problems_with_metadata(isolated, capsys):
    assert main(["run", "--study", "micro", "--select", "group:problems"]) == 0
    out = capsys.readouterr().out
    assert "study micro: done" in out and "report:" in out
    instance = dg.DagsterInstance.get()
    assert instance.get_dynamic_partitions("model_family") == ["micro-qwen"]
    for key, rows in [("problem_pool", 60), ("benchmarks", None)]:
        event = instance.get_latest_materialization_event(dg.AssetKey(key))
        meta = event.asset_materialization.metadata
        assert {"dagster/row_count", "rejected_by_reason", "sample"} <= set(meta), key
        if rows:
            assert meta["dagster/row_count"].value == rows
    # The runs are in the instance the UI reads.
    assert len(instance.get_runs()) >= 1

    assert main(["sql", "select count(*) as n from problem_pool", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 60}]
    assert main(["sql", "select benchmark, count(*) n from benchmarks group by 1", "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("benchmark,n\nsynth-micro,")
    assert main(["sql", "select * from no_such_table"]) == 1
    assert "tables in" in capsys.readouterr().err


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
    assert set(dg.DagsterInstance.get().get_dynamic_partitions("model_family")) == {"micro-qwen", "micro-llama"}


def test_sensor_adds_missing_family_partitions(tmp_path):
    study = resolve_study_path("tiny")
    sensor = build_family_sensor(str(study))
    with dg.instance_for_test() as instance:
        result = sensor(dg.build_sensor_context(instance=instance))
        assert isinstance(result, dg.SensorResult)
        (request,) = result.dynamic_partitions_requests
        assert request.partitions_def_name == model_family.name
        assert list(request.partition_keys) == ["tiny-qwen", "tiny-llama"]
        instance.add_dynamic_partitions(model_family.name, list(request.partition_keys))
        again = sensor(dg.build_sensor_context(instance=instance))
        assert isinstance(again, dg.SkipReason) and "all 2 families" in again.skip_message
    broken = write_study(tmp_path / "broken.yaml", "name: [\n")
    with dg.instance_for_test() as instance:
        skip = build_family_sensor(str(broken))(dg.build_sensor_context(instance=instance))
        assert "study file is invalid" in skip.skip_message


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


def test_common_set_check_fails_when_too_many_problems_drop(tmp_path):
    import pandas as pd

    from qup_assets.assets.resources import StudyResource
    from qup_assets.assets.variants import common_problems_large_enough

    study = StudyResource(study=str(resolve_study_path("micro")), store_dir=str(tmp_path))
    df = pd.DataFrame({"problem_id": list("abcd"), "common": [True, False, False, False],
                       "reason": ["", "style_aligned: x", "reference: y", "reference: z"],
                       "retried_variants": ["oracle_refined", "", "", ""]})
    res = common_problems_large_enough(study=study, common_problems=df)
    assert not res.passed
    assert res.metadata["dropped_share"].value == 0.75 and res.metadata["retried_share"].value == 0.25
    assert "reference" in res.metadata["dropped_by_variant"].value
    df["common"] = True
    assert common_problems_large_enough(study=study, common_problems=df).passed


def test_code_versions_follow_the_study_sections_each_asset_reads(tmp_path):
    def versions(text):
        path = write_study(tmp_path / "s.yaml", text)
        graph = build_definitions(str(path)).resolve_asset_graph()
        return {k.to_user_string(): graph.get(k).code_version for k in graph.get_all_asset_keys()}

    base = resolve_study_path("micro").read_text()
    before = versions(base)
    edited = base.replace("sampling: {n: 4,", "sampling: {n: 6,")
    assert edited != base, "micro.yaml changed shape: update this edit"
    after = versions(edited)
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {"native_samples", "native_traces"}
    family = "  micro-llama:\n    student: {kind: synthetic, architecture: llama, style: llama}\n"
    with_family = base.replace("\noracle:", "\n" + family + "\noracle:", 1)
    assert with_family != base, "micro.yaml changed shape: update this edit"
    assert set(load_study(write_study(tmp_path / "f.yaml", with_family)).families) == {"micro-qwen", "micro-llama"}
    added = versions(with_family)
    assert added == before  # a new family must not make the existing ones look stale
