"""The Dagster layer: every asset described and versioned in its study's namespace, the sensor, the checks."""


import os
import subprocess
import sys

import dagster as dg

from qup_assets.assets.partitions import family_partitions
from qup_assets.assets.sensors import build_family_sensor
from qup_assets.definitions import build_definitions
from qup_assets.study import load_study, resolve_study_path

from .helpers import write_study


def test_every_asset_is_documented_grouped_and_versioned(isolated):
    graph = build_definitions("micro").resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        assert key.path[0] == "micro", key  # the study's namespace
        node = graph.get(key)
        assert node.description and len(node.description) > 40, key
        assert node.group_name and node.group_name != "default", key
        assert node.code_version, key


def test_sensor_adds_missing_family_partitions(tmp_path):
    study = resolve_study_path("tiny")
    sensor = build_family_sensor(str(study), "tiny")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(family_partitions("micro").name, ["micro-qwen"])  # another study's
        result = sensor(dg.build_sensor_context(instance=instance))
        assert isinstance(result, dg.SensorResult)
        (request,) = result.dynamic_partitions_requests
        assert request.partitions_def_name == "tiny_model_family"
        assert list(request.partition_keys) == ["tiny-qwen-small", "tiny-qwen", "tiny-llama"]
        instance.add_dynamic_partitions("tiny_model_family", list(request.partition_keys))
        again = sensor(dg.build_sensor_context(instance=instance))
        assert isinstance(again, dg.SkipReason) and "all 3 families" in again.skip_message
    broken = write_study(tmp_path / "broken.yaml", "name: [\n")
    with dg.instance_for_test() as instance:
        skip = build_family_sensor(str(broken), "broken")(dg.build_sensor_context(instance=instance))
        assert "study file is invalid" in skip.skip_message


def test_common_set_check_fails_when_too_many_problems_drop(tmp_path):
    import pandas as pd

    from qup_assets.assets.resources import StudyResource
    from qup_assets.assets.traces import build_common_problems

    common_problems_large_enough = build_common_problems()[1]

    study = StudyResource(study=str(resolve_study_path("micro")), store_dir=str(tmp_path / "studies" / "micro"),
                          store_root=str(tmp_path))
    df = pd.DataFrame({"model_family": "f", "problem_id": list("abcd"), "common": [True, False, False, False],
                       "reason": ["", "style_aligned: failed after 3 attempts (answer wrong: 5 vs 7)",
                                  "reference: no reference solution", "reference: no reference solution"],
                       "retried_variants": ["oracle_refined", "", "", ""]})
    res = common_problems_large_enough(study=study, common_problems=df)
    assert not res.passed
    assert res.metadata["dropped_share"].value == 0.75 and res.metadata["retried_share"].value == 0.25
    assert "reference" in res.metadata["dropped_by_variant"].value
    lines = res.description.splitlines()
    assert lines[0] == "f: common set 1/4 native traces (25%) is below min_common_fraction = 0.5"
    assert lines[1:3] == ["reference: 2/4 verified; 2 x no reference solution",
                          "style_aligned: 3/4 verified; 1 x answer wrong"]
    # families are judged one by one: a second family with a full common set does not hide the first
    other = df.assign(model_family="g", common=True, reason="")
    res = common_problems_large_enough(study=study, common_problems=pd.concat([df, other]))
    assert not res.passed and res.metadata["families_below"].value == "f"
    df["common"] = True
    assert common_problems_large_enough(study=study, common_problems=df).passed


def test_code_versions_follow_the_study_sections_each_asset_reads(isolated, tmp_path):
    def versions(text):
        path = write_study(tmp_path / "s.yaml", text)
        graph = build_definitions(str(path)).resolve_asset_graph()
        return {k.path[-1]: graph.get(k).code_version for k in graph.get_all_asset_keys()}

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


def test_two_studies_in_one_instance_have_separate_keys_partitions_and_stores(isolated, tmp_path):
    micro = build_definitions("micro").resolve_asset_graph()
    tiny = build_definitions("tiny").resolve_asset_graph()
    assert not set(micro.get_all_asset_keys()) & set(tiny.get_all_asset_keys())
    fam = next(k for k in micro.get_all_asset_keys() if k.path[-1] == "native_samples")
    assert micro.get(fam).partitions_def.name == "micro_model_family"
    defs = build_definitions("micro")
    store = defs.resources["study"].store_dir
    assert store == str(isolated / "store" / "studies" / "micro")
    assert defs.resources["io_manager"].store_dir == store


def test_dg_checks_and_lists_the_definitions_module(isolated):
    """pyproject's [tool.dg] makes the repo a dg project whose code location is qup_assets.definitions: `dg check
    defs` loads it through a Dagster instance (the isolated DAGSTER_HOME), `dg list defs` shows QUP_STUDY's keys."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    dg_cli = Path(sys.executable).parent / "dg"
    assert dg_cli.is_file(), f"{dg_cli} is missing: dagster-dg-cli is in the dev extra (pip install -e '.[dev]')"
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "QUP_STUDY": "micro"}
    check = subprocess.run([str(dg_cli), "check", "defs"], cwd=root, env=env, capture_output=True, text=True,
                           timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "All definitions loaded successfully" in check.stdout + check.stderr
    listed = subprocess.run([str(dg_cli), "list", "defs", "--json"], cwd=root, env=env, capture_output=True,
                            text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr
    keys = {a["asset_key"] for a in json.loads(listed.stdout)["assets"]}
    assert "micro/paradox_report" in keys and all(k.startswith("micro/") for k in keys)


def test_table_assets_publish_their_columns_and_tables_render_with_types(tmp_path):
    """The catalog's column view (dagster/column_schema) and a typed table value, through a real materialization:
    NaN, numpy scalars and strings all survive Dagster's serialization."""
    import numpy as np
    import pandas as pd

    from qup_assets.assets.metadata import table, versioned

    df = pd.DataFrame({"variant": ["native", "style_aligned"], "avg_at_k": [0.25, np.nan],
                       "n_problems": np.array([20, 20], dtype=np.int64)})

    @dg.asset
    def scores(context: dg.AssetExecutionContext) -> dg.Output[pd.DataFrame]:
        context.add_output_metadata({"avg_at_k": table(df)})
        return versioned(df)

    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        assert dg.materialize([scores], instance=instance).success
        meta = instance.get_latest_materialization_event(dg.AssetKey("scores")).asset_materialization.metadata
    cols = meta["dagster/column_schema"].value.columns
    assert [(c.name, c.type) for c in cols] == [("variant", "object"), ("avg_at_k", "float64"), ("n_problems", "int64")]
    records = meta["avg_at_k"].value.records
    assert records[0].data == {"variant": "native", "avg_at_k": 0.25, "n_problems": 20}
    assert records[1].data["avg_at_k"] is None  # NaN is a missing value, not a JSON error


def test_a_runs_torch_threads_hold_whether_torch_is_loaded_before_or_after_the_resource():
    """The study resource sets the run's torch threads without importing torch (a report run never needs it):
    a step that imports torch later still gets the run's count, and so does one where torch was loaded first."""
    code = ("import sys\nfrom qup_assets.assets.resources import set_torch_threads\n"
            "{before}set_torch_threads(1)\nloaded = 'torch' in sys.modules\nimport torch\n"
            "print(loaded, torch.get_num_threads())")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    for before, loaded in (("", "False"), ("import torch; torch.set_num_threads(2)\n", "True")):
        out = subprocess.run([sys.executable, "-c", code.format(before=before)], env=env, capture_output=True,
                             text=True, check=True).stdout.split()
        assert out == [loaded, "1"], out
