"""`paradox_report`: what a researcher opens. Tables, correlations, plots and a generated verdict."""

import dagster as dg
import pandas as pd

from qup_assets.assets.metadata import md_table, versioned
from qup_assets.assets.partitions import model_family
from qup_assets.assets.resources import StudyResource
from qup_assets.report.build import KINDS, NoFamilyReady, build_report, report_families
from qup_assets.report.exemplars import disagreements, exemplar_table, within_variant_correlations
from qup_assets.report.forest import comparison, decided
from qup_assets.report.render import data_uri, markdown, table1_display, write_report
from qup_assets.storage.tables import report_dir
from qup_assets.variants import names

# Tag on every run `qup run` launches: it refreshes the report itself, in its last wave.
LAUNCHED_BY_QUP = {"qup/launched_by": "qup run"}

# The report refreshes by itself while a daemon runs, once an input changed in a run that `qup run` did not
# launch (a UI materialization or backfill) and no input is missing or in progress: Dagster's eager
# condition, without the runs that refresh the report on their own (they would make it run twice).
REFRESH = (
    dg.AutomationCondition.any_deps_match(
        dg.AutomationCondition.newly_updated()
        & ~dg.AutomationCondition.all_new_updates_have_run_tags(tag_keys=set(LAUNCHED_BY_QUP))
    ).since_last_handled()
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("eager, for inputs changed outside qup run")


def build_exemplars_asset() -> dg.AssetsDefinition:
    """Per-trace facts of every registry variant, joined: what the report's exemplar sections read."""
    variants = names()
    ins = {f"{v}_{kind}": dg.AssetIn(f"{v}_{kind}") for v in variants for kind in ("traces", "adaptation", "rewards")}

    @dg.asset(
        partitions_def=model_family,
        group_name="report",
        code_version="2",
        kinds={"parquet", "duckdb"},
        ins=ins,
        description="One row per (variant, common problem) of the family: the problem's step count and source, the "
        "reward per RM (reward_<rm>) and combined (reward), the trace's own NLL, tokens, PPL and quartile PPLs under "
        "the student, semantic preservation and edit distance to native, its text and each token's loss. The "
        "DuckDB view `exemplars` (qup sql) is this table.",
    )
    def exemplars(context: dg.AssetExecutionContext, study: StudyResource, problem_pool: pd.DataFrame,
                  **inputs: pd.DataFrame) -> dg.Output[pd.DataFrame]:
        family = context.partition_key
        table = {kind: {v: inputs[f"{v}_{kind}"] for v in variants} for kind in ("traces", "adaptation", "rewards")}
        df = exemplar_table(family, table["traces"], table["adaptation"], table["rewards"], problem_pool,
                            study.load())
        within = within_variant_correlations(df, 200, 0)
        top = disagreements(df)
        top = top[[c for c in top.columns if not c.startswith(("tokens_", "token_nll_", "text_"))]]
        context.add_output_metadata({
            "dagster/row_count": len(df),
            "variants": df["variant"].nunique(),
            "problems": df["problem_id"].nunique(),
            "reward_vs_ppl_within_variant": md_table(within.round(3)),
            "largest_disagreements": md_table(top.round(3), max_rows=10),
        })
        return versioned(df)

    return exemplars


def build_report_asset() -> dg.AssetsDefinition:
    """The report over every variant of the registry."""
    variants = names()
    ins = {**{f"{v}_{kind}": dg.AssetIn(f"{v}_{kind}") for v in variants for kind in KINDS},
           "base_eval": dg.AssetIn("base_eval"), "base_per_problem": dg.AssetIn("base_per_problem"),
           "rm_diagnostics": dg.AssetIn("rm_diagnostics"), "exemplars": dg.AssetIn("exemplars"),
           "benchmarks": dg.AssetIn("benchmarks"), "base_model": dg.AssetIn("base_model")}

    @dg.asset(
        group_name="report",
        code_version="6",
        kinds={"markdown", "html"},
        ins=ins,
        automation_condition=REFRESH,
        description="The paradox report: Table 1 (mean reward per RM and Avg@k per objective, with CIs, per family), "
        "Table 2 (global and quartile perplexity, reward, semantic preservation, accuracy), reward-model diagnostics "
        "(does each RM tell the family's correct samples from its wrong ones?), Spearman and Kendall rank "
        "correlations of reward and of PPL with accuracy (per family and pooled, bootstrap intervals), a verdict "
        "generated from those intervals and the same under each reward model alone (metadata verdict/<rm>), the "
        "share of identical texts between variants, the wrong steps behind the native traces' right answers, plots, "
        "and the paper's published numbers for reference. Written to "
        "QUP_STORE/studies/{study name}/report/ as Markdown, CSVs, PNGs and one self-contained HTML page.",
    )
    def paradox_report(context: dg.AssetExecutionContext, study: StudyResource, **inputs: pd.DataFrame) -> dg.Output[dict]:
        s = study.load()
        try:
            families, excluded = report_families(s, inputs)
        except NoFamilyReady as e:
            raise dg.Failure(description=str(e)) from None
        if excluded:
            context.log.warning(f"excluded from the report (removed from the study file, data kept): {excluded}")
        context.log.info(f"report over families {families}")
        rep = build_report(s, inputs, families, excluded)
        out = report_dir(study.store)
        paths = write_report(rep, out)
        for line in rep.verdict + rep.rm_lines[:1]:
            context.log.info(line)
        by_rm = dict(zip(rep.rm_verdicts["reward_model"], rep.rm_verdicts["state"])) if len(rep.rm_verdicts) else {}
        context.add_output_metadata({
            "headline": rep.headline,  # plain text: on the asset's page and in the catalog's metadata column
            "verdict": dg.MetadataValue.md("\n\n".join(rep.verdict + rep.rm_lines[:1] + ["\n".join(rep.rm_lines[1:])]
                                                       + decided(rep.gaps) + [""] + decided(rep.rft))),
            # the paired comparisons as forest plots, one per question (report/forest.py)
            "comparisons": dg.MetadataValue.md("\n\n".join(
                line for q, lines in (("gaps", rep.gaps), ("selection", rep.selection), ("rft", rep.rft))
                for line in comparison(rep, q, lines, lambda n: data_uri(rep.plots[n])) if line)),
            **{f"verdict/{rm}": state for rm, state in by_rm.items()},
            "report": dg.MetadataValue.md(markdown(rep, lambda n: data_uri(rep.plots[n]))),
            "table1": md_table(table1_display(rep), max_rows=40, width=40),
            "families": ", ".join(families),
            "excluded_families": ", ".join(excluded) or "none",
            "report_html": dg.MetadataValue.path(str(paths["report.html"])),
            "report_dir": dg.MetadataValue.path(str(out)),
        })
        return versioned({"study": s.name, "families": families, "excluded": excluded, "headline": rep.headline,
                          "verdict": rep.verdict,
                          "verdict_by_reward_model": by_rm, "files": sorted(str(p) for p in paths.values())})

    return paradox_report
