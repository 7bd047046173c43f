"""The variant registry is the one place a variant is declared: the asset graph, the common problem set, the
report and `qup plan` all follow it."""

import dagster as dg
import pandas as pd
import pytest

from qup_assets import variants
from qup_assets.definitions import build_definitions
from qup_assets.oracle.base import TASKS
from qup_assets.oracle.llm import PROMPT_VERSIONS, prompt_template
from qup_assets.plan import estimate
from qup_assets.report.build import KINDS, build_report, report_families
from qup_assets.report.render import table1_display, write_report
from qup_assets.storage.tables import read_table
from qup_assets.study import load_study, resolve_study_path
from qup_assets.variants import Variant

# A throwaway variant made by an Oracle task that exists (the symbolic and LLM Oracles both refine).
TERSE = Variant("terse", "Terse rewrite", "oracle", "A second refinement, to show that one entry is enough.",
                oracle_task="refine")


@pytest.fixture
def with_terse(monkeypatch):
    monkeypatch.setattr(variants, "REGISTRY", [*variants.REGISTRY, TERSE])


def test_the_registry_names_each_variant_once_with_what_the_report_needs():
    names = variants.names()
    assert names[0] == "native" and len(set(names)) == len(names)
    assert [v.name for v in variants.rewrites()] == names[1:]
    assert sorted(variants.oracle_tasks()) == ["refine", "style_align", "synthesize"]
    # every Oracle task a variant names is one both Oracles implement, the LLM one with a versioned prompt
    assert set(variants.oracle_tasks()) <= set(TASKS) == set(PROMPT_VERSIONS)
    assert all(prompt_template(t) for t in TASKS)
    assert all(v.label and v.description for v in variants.all_variants())
    # the paper's variants carry its numbers; a selected variant is beyond the paper and names its candidates
    assert all(v.paper is not None for v in variants.all_variants() if v.source != "selected")
    assert all(v.candidates and v.paper is None for v in variants.sources("selected"))
    assert variants.label("base").startswith("base model") and variants.label("nope") == "nope"
    with pytest.raises(KeyError, match="unknown variant 'nope'"):
        variants.get("nope")


def test_a_variant_added_to_the_registry_gets_its_assets_and_joins_the_common_set(with_terse, tmp_path):
    defs = build_definitions("micro", store=str(tmp_path))
    graph = defs.resolve_asset_graph()
    key = lambda name: dg.AssetKey(["micro", name])  # noqa: E731
    for kind in ("traces", "adaptation", "rewards", "checkpoints", "eval", "per_problem"):
        node = graph.get(key(f"terse_{kind}"))
        assert node.group_name == "terse" and node.partitions_def is not None
        assert node.description
    assert key("terse_traces") in graph.get(key("common_problems")).parent_keys
    assert {key("terse_eval"), key("terse_per_problem"), key("terse_rewards")} <= graph.get(key("paradox_report")).parent_keys
    assert graph.get(key("terse_traces")).description.startswith(TERSE.description)
    # the family job picks it up like any other variant
    job = defs.resolve_job_def("family_assets")
    assert key("terse_checkpoints") in job.asset_layer.executable_asset_keys


def test_a_variant_added_to_the_registry_has_its_plan_line(with_terse, tmp_path):
    study = load_study(resolve_study_path("micro"))
    rows = dict(estimate(study, tmp_path))
    assert "terse (oracle)" in rows["variants"]
    per_pass = study.problems.size * len(study.families)
    n = len(variants.names())
    assert rows["perplexity passes (variants x pool x families)"] == f"{n * per_pass:,}"  # the registry's, terse too
    assert rows["oracle rewrites (4 variants x pool x families), at most"] == f"{4 * per_pass:,}"


@pytest.mark.slow
def test_a_variant_added_to_the_registry_gets_its_report_rows(with_terse, micro_study, tmp_path):
    """The report over micro's real tables, with the throwaway variant's tables a copy of Style-Aligned's."""
    study = load_study(micro_study.study)
    tables = {}
    for name in [*[f"{v}_{k}" for v in variants.names() if v != "terse" for k in KINDS],
                 "base_eval", "base_per_problem", "rm_diagnostics"]:
        tables[name] = read_table(micro_study.store, name, list(study.families))
    for k in KINDS:
        tables[f"terse_{k}"] = tables[f"style_aligned_{k}"].copy()
    families, excluded = report_families(study, tables)
    rep = build_report(study, tables, families, excluded)
    assert "terse" in set(rep.table1["variant"]) and "terse" in set(rep.table2["variant"])
    assert "Terse rewrite" in set(table1_display(rep)["variant"])
    t1 = rep.table1.set_index("variant")
    assert t1.loc["terse"].equals(t1.loc["style_aligned"])  # the same data gives the same row
    paths = write_report(rep, tmp_path / "report")
    assert "Terse rewrite" in paths["report.md"].read_text()
    assert set(pd.read_csv(paths["table1.csv"])["variant"]) >= {"terse", "style_aligned", "base"}


def test_plan_shows_each_familys_lineage_and_size_before_anything_is_built(tmp_path):
    rows = dict(estimate(load_study(resolve_study_path("tiny")), tmp_path))
    small, large = rows["family tiny-qwen-small"], rows["family tiny-qwen"]
    assert small.startswith("qwen2, ~") and large.startswith("qwen2, ~") and "from the architecture" in small
    assert rows["family tiny-llama"].startswith("llama, ~")
    paper = dict(estimate(load_study(resolve_study_path("paper")), tmp_path))
    # no weights here: the size comes from the model id, the lineage from the study file
    assert paper["family qwen2.5-math-7b"] == ("qwen2.5-math, 7B parameters (from the model id; the folder is not "
                                               "on this machine)")
    assert paper["family deepseekmath-7b"].startswith("deepseekmath, 7B")
