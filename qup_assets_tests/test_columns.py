"""Every column of every table asset explains itself in the UI: qup_assets/columns.py describes each one, and
column_schema puts the descriptions in `dagster/column_schema`. Built from the code's column lists (no Dagster
run); QUP_COLUMNS_STORE=<a store> also checks every Parquet table a real run wrote there."""

import os
from pathlib import Path

import pandas as pd
import pytest

from qup_assets import variants
from qup_assets.adaptation.perplexity import ADAPTATION_COLUMNS
from qup_assets.adaptation.selection import SELECTED_COLUMNS
from qup_assets.assets import study_graph
from qup_assets.assets.metadata import column_schema, table
from qup_assets.assets.training import CHECKPOINT_COLUMNS
from qup_assets.columns import COLUMNS, OVERRIDES, asset_kind, describe, table_kind
from qup_assets.evaluation.metrics import EVAL_COLUMNS, per_problem
from qup_assets.problems.sources import POOL_COLUMNS
from qup_assets.report.exemplars import EXEMPLAR_COLUMNS, reward_column
from qup_assets.reward.diagnostics import DIAGNOSTIC_COLUMNS
from qup_assets.reward.scorers import SCORE_COLUMNS
from qup_assets.sampling.native import SAMPLE_COLUMNS, TRACE_COLUMNS
from qup_assets.variants import VARIANT_COLUMNS, common_set

# The columns of the eval's avg_at_k UI table (assets/evaluation.py): a slice of the eval table plus `ci`.
EVAL_UI_TABLE = ["objective", "lr", "batch_size", "benchmark", "avg_at_k", "ci", "pass_at_k", "n_problems",
                 "no_answer_rate", "truncation_rate"]


def published_columns() -> dict[str, list[str]]:
    """Asset name -> the columns its table publishes, from the lists (and functions) that make them."""
    samples = pd.DataFrame({"benchmark": ["b"], "problem_id": ["p"], "correct": [True]})
    # evaluation.py adds the checkpoint's identity (the eval table's first four columns) to per_problem's rows
    per_problem_columns = [*per_problem(samples).columns, *EVAL_COLUMNS[:4]]
    tables = {
        "problem_pool": POOL_COLUMNS,
        "benchmarks": ["benchmark", *POOL_COLUMNS],
        "native_samples": SAMPLE_COLUMNS,
        "native_traces": TRACE_COLUMNS,
        "common_problems": list(common_set("f", pd.DataFrame({"problem_id": ["p"]}), {}).columns),
        "rm_diagnostics": DIAGNOSTIC_COLUMNS,
        "exemplars": [*EXEMPLAR_COLUMNS[:6], reward_column("synthetic-rm"), *EXEMPLAR_COLUMNS[6:]],
        "base_eval": EVAL_COLUMNS,
        "base_per_problem": per_problem_columns,
    }
    for v in variants.all_variants():
        if v.source != "student":
            tables[f"{v.name}_traces"] = SELECTED_COLUMNS if v.source == "selected" else VARIANT_COLUMNS
        tables.update({f"{v.name}_rewards": SCORE_COLUMNS, f"{v.name}_adaptation": ADAPTATION_COLUMNS,
                       f"{v.name}_checkpoints": CHECKPOINT_COLUMNS, f"{v.name}_eval": EVAL_COLUMNS,
                       f"{v.name}_per_problem": per_problem_columns})
    return {name: list(cols) for name, cols in tables.items()}


def _undescribed(columns, asset=None) -> list[str]:
    return [c for c, text in describe(columns, asset).items() if not text.strip()]


def test_the_graphs_table_assets_are_the_ones_listed_here():
    assets, _ = study_graph()
    specs = [spec for a in assets for spec in a.specs]
    listed = set(published_columns())
    # every Parquet asset is listed (checkpoints, kind pytorch, are a table of model folders), and nothing else
    assert {s.key.path[-1] for s in specs if "parquet" in s.kinds} <= listed <= {s.key.path[-1] for s in specs}


@pytest.mark.parametrize("asset", sorted(published_columns()))
def test_every_published_column_has_a_description_and_the_table_tells_its_kind(asset):
    columns = published_columns()[asset]
    assert not _undescribed(columns, asset), f"{asset}: no description in qup_assets/columns.py"
    # versioned(df) names no asset: the kind told from the columns is the asset's own
    assert table_kind(columns) == asset_kind(asset)
    assert describe(columns) == describe(columns, asset)


def test_no_description_is_left_over():
    used = {c for cols in published_columns().values() for c in cols} | set(EVAL_UI_TABLE)
    assert set(COLUMNS) - used == set()
    kinds = {asset_kind(a) for a in published_columns()}
    assert {(k, c) for k, c in OVERRIDES if k not in kinds or c not in used} == set()


def test_the_same_name_reads_by_its_table():
    eval_ci = describe(EVAL_COLUMNS)["ci_low"]
    diag_ci = describe(DIAGNOSTIC_COLUMNS)["ci_low"]
    assert "avg_at_k" in eval_ci and "benchmark items" in eval_ci
    assert "p_correct_over_wrong" in diag_ci and diag_ci != eval_ci
    assert describe(["model_family", "problem_id", "common", "reason", "retried_variants"])["reason"] != \
        describe(SAMPLE_COLUMNS)["reason"] != describe(VARIANT_COLUMNS)["reason"]
    assert describe(ADAPTATION_COLUMNS)["n_tokens"] != describe(TRACE_COLUMNS)["n_tokens"]
    generated = describe([*EXEMPLAR_COLUMNS, "reward_process_rm"])
    assert "process_rm" in generated["reward_process_rm"] and "quarter 3" in generated["ppl_q3"]


def test_column_schema_and_ui_tables_carry_the_descriptions():
    df = pd.DataFrame({c: [0.5] for c in EVAL_COLUMNS}).assign(ci="[0.4, 0.6]")
    schema = column_schema(df)
    assert all(c.description for c in schema.columns)
    assert schema.columns[EVAL_COLUMNS.index("avg_at_k")].description.startswith("Avg@k: mean accuracy")
    ui = table(df[EVAL_UI_TABLE])
    assert all(c.description for c in ui.schema.columns)
    # a column nothing describes has no description (None), never a made-up one
    assert column_schema(pd.DataFrame({"mystery": [1]})).columns[0].description is None


def _store_tables(root: Path):
    for path in sorted(root.glob("**/tables/*/*.parquet")):
        if not path.name.startswith("."):
            yield path.parent.name, path


@pytest.mark.skipif(not os.environ.get("QUP_COLUMNS_STORE"), reason="QUP_COLUMNS_STORE names no materialized store")
def test_every_column_of_a_materialized_store_has_a_description():
    import pyarrow.parquet as pq

    root = Path(os.environ["QUP_COLUMNS_STORE"])
    seen, missing, kinds = 0, {}, {}
    for asset, path in _store_tables(root):
        columns = [c for c in pq.read_schema(path).names if not c.startswith("__index_level_")]
        seen += 1
        if bad := _undescribed(columns, asset):
            missing[str(path.relative_to(root))] = bad
        if table_kind(columns) != asset_kind(asset):
            kinds[str(path.relative_to(root))] = (table_kind(columns), asset_kind(asset))
    assert seen, f"no Parquet table under {root}"
    assert not missing, f"columns without a description: {missing}"
    assert not kinds, f"kind told from the columns vs the asset's: {kinds}"


def test_column_lineage_names_real_upstream_columns_and_reaches_every_score():
    """Every lineage entry points at a column the input's table publishes, and each score (rewards, perplexity,
    Avg@k, the RM diagnostics) reaches back to the text or samples it was computed from."""
    from qup_assets.columns import lineage

    tables = published_columns()
    assets, _ = study_graph()
    reached = {}
    for a in assets:
        for spec in a.specs:
            name = spec.key.path[-1]
            if name not in tables:
                continue
            inputs = {i: k.path[-1] for i, k in a.keys_by_input_name.items()}
            deps = lineage(tables[name], inputs, name)
            for col, sources in deps.items():
                for i, c in sources:
                    assert c in tables.get(inputs[i], []), f"{name}.{col} <- {inputs[i]}.{c}: no such column"
            reached[name] = deps
    for v in variants.names():
        assert ("traces", "completion") in reached[f"{v}_rewards"]["score"]
        assert ("traces", "completion") in reached[f"{v}_adaptation"]["ppl"]
        assert ("checkpoints", "checkpoint") in reached[f"{v}_eval"]["avg_at_k"]
        assert ("benchmarks", "problem") in reached[f"{v}_per_problem"]["accuracy"]
    assert ("native_samples", "correct") in reached["rm_diagnostics"]["p_correct_over_wrong"]
    assert reached["native_traces"]["completion"] == [("native_samples", "completion")]
    assert ("native_traces", "completion") in reached["oracle_refined_traces"]["completion"]


def test_a_materialized_score_carries_its_column_lineage_in_the_instance(micro_study, monkeypatch):
    """What the UI's column lineage reads: dagster/column_lineage on the materialization, with the study's keys."""
    import dagster as dg

    from .helpers import key

    micro_study.env(monkeypatch)
    with dg.DagsterInstance.get() as instance:
        event = instance.get_latest_materialization_event(key("oracle_refined_rewards"))
        lin = event.asset_materialization.metadata["dagster/column_lineage"].value
        deps = {(d.asset_key, d.column_name) for d in lin.deps_by_column["score"]}
        assert deps == {(key("oracle_refined_traces"), "prompt"), (key("oracle_refined_traces"), "completion")}
        shown = event.asset_materialization.metadata["column_lineage"].value  # what the open-source UI shows
        assert "| score | micro/oracle_refined_traces.prompt, micro/oracle_refined_traces.completion |" in shown
        ev = instance.get_latest_materialization_event(key("native_eval")).asset_materialization.metadata
        assert (key("native_checkpoints"), "checkpoint") in {
            (d.asset_key, d.column_name) for d in ev["dagster/column_lineage"].value.deps_by_column["avg_at_k"]}
