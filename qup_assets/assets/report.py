"""`paradox_report`: what a researcher opens. Tables, correlations, plots and a generated verdict."""

import json

import dagster as dg
import pandas as pd

from qup_assets.assets.metadata import md_table, versioned
from qup_assets.assets.quality import ALL_VARIANTS
from qup_assets.assets.resources import StudyResource
from qup_assets.assets.training import per_problem_path
from qup_assets.report.analysis import (
    combined_reward,
    correlation_table,
    correlations,
    family_data,
    gap_sentences,
    paired_differences,
    paper_correlations,
    rft_sentences,
    verdict,
)
from qup_assets.report.render import Report, data_uri, make_plots, markdown, table1_display, write_report
from qup_assets.report.tables import grid_table, reward_distribution, table1, table2
from qup_assets.storage.tables import report_dir

_INS = {
    **{f"{v}_{kind}": dg.AssetIn(f"{v}_{kind}") for v in ALL_VARIANTS
       for kind in ("rewards", "adaptation", "checkpoints", "eval")},
    "base_eval": dg.AssetIn("base_eval"),
    "rm_diagnostics": dg.AssetIn("rm_diagnostics"),
}


def _per_problem(store, variant: str, families: list[str]) -> pd.DataFrame:
    frames = []
    for fam in families:
        path = per_problem_path(store, f"{variant}_eval", fam)
        if not path.is_file():
            raise dg.Failure(description=f"{path} is missing: re-materialize {variant}_eval for partition {fam}")
        frames.append(pd.read_parquet(path))
    return pd.concat(frames, ignore_index=True)


def _loss_curves(checkpoints: dict[str, pd.DataFrame], lr: float, batch_size: int) -> dict:
    out = {}
    for v, ck in checkpoints.items():
        if "loss_curve" not in ck.columns:
            continue
        for _, r in ck.iterrows():
            if r["lr"] == lr and r["batch_size"] == batch_size:
                out[(r["model_family"], v, r["objective"])] = [tuple(p) for p in json.loads(r["loss_curve"])]
    return out


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


@dg.asset(
    group_name="report",
    code_version="2",
    kinds={"markdown", "html"},
    ins=_INS,
    automation_condition=REFRESH,
    description="The paradox report: Table 1 (mean reward per RM and Avg@k per objective, with CIs, per family), "
    "Table 2 (global and quartile perplexity, reward, semantic preservation, accuracy), reward-model diagnostics "
    "(does each RM tell the family's correct samples from its wrong ones?), Spearman and Kendall rank "
    "correlations of reward and of PPL with accuracy (per family and pooled, bootstrap intervals), a verdict "
    "generated from those intervals, plots, and the paper's published numbers for reference. Written to "
    "QUP_STORE/studies/{study name}/report/ as Markdown, CSVs, PNGs and one self-contained HTML page.",
)
def paradox_report(context: dg.AssetExecutionContext, study: StudyResource, **inputs: pd.DataFrame) -> dg.Output[dict]:
    s = study.load()
    tr, ev = s.training, s.evaluation
    # Exactly the study file's families: a partition whose family was removed from the file keeps its data,
    # and is named in the report as excluded, never pooled.
    evaluated = set.intersection(*[set(inputs[f"{v}_eval"]["model_family"]) for v in ALL_VARIANTS])
    present = set().union(*[set(df["model_family"]) for df in inputs.values() if "model_family" in df])
    families = [f for f in s.families if f in evaluated]
    excluded = sorted(present - set(s.families))
    if not families:
        raise dg.Failure(description=f"no family of study {s.name!r} has every variant evaluated yet "
                         f"(study families: {list(s.families)}); materialize the *_eval assets first")
    if excluded:
        context.log.warning(f"excluded from the report (removed from the study file, data kept): {excluded}")
    context.log.info(f"report over families {families}")
    inputs = {k: df[df["model_family"].isin(families)] if "model_family" in df else df for k, df in inputs.items()}
    rewards = {v: inputs[f"{v}_rewards"] for v in ALL_VARIANTS}
    adaptation = {v: inputs[f"{v}_adaptation"] for v in ALL_VARIANTS}
    evals = {v: inputs[f"{v}_eval"] for v in ALL_VARIANTS}
    checkpoints = {v: inputs[f"{v}_checkpoints"] for v in ALL_VARIANTS}
    per_problem = {v: _per_problem(study.store, v, families) for v in [*ALL_VARIANTS, "base"]}
    objectives = list(tr.objectives)
    samples = min(ev.bootstrap_samples, 1000)
    scored = combined_reward(rewards)  # one reward per trace: several RMs z-scored first (Table 1 keeps them raw)
    fams = [f for f in (family_data(name, scored, adaptation, per_problem, objectives, tr.lr, tr.batch_size)
                        for name in families) if f]
    corrs = correlations(fams, objectives, samples, ev.seed)
    diffs = paired_differences(fams, objectives, samples, ev.seed)
    rep = Report(
        study=s.name, description=s.description,
        synthetic=all(f.student.kind == "synthetic" for f in s.families.values()) and s.oracle.kind == "symbolic",
        objectives=objectives, reward_models=[rm.name for rm in s.reward_models], k=ev.k,
        table1=table1(rewards, evals, inputs["base_eval"], objectives, tr.lr, tr.batch_size, samples, ev.seed),
        table2=table2(adaptation, scored, evals, objectives, tr.lr, tr.batch_size),
        correlations=correlation_table(corrs), differences=diffs, paper_correlations=paper_correlations(),
        verdict=verdict(corrs, objectives), gaps=gap_sentences(diffs), rft=rft_sentences(diffs),
        loss_curves=_loss_curves(checkpoints, tr.lr, tr.batch_size), families=families, excluded=excluded,
        grid=grid_table(evals), rm_diagnostics=inputs["rm_diagnostics"].reset_index(drop=True),
        reward_distribution=reward_distribution(rewards),
    )
    rep.plots = make_plots(rep)
    out = report_dir(study.store)
    paths = write_report(rep, out)
    for line in rep.verdict:
        context.log.info(line)
    context.add_output_metadata({
        "verdict": dg.MetadataValue.md("\n\n".join(rep.verdict + [""] + rep.gaps + [""] + rep.rft)),
        "report": dg.MetadataValue.md(markdown(rep, lambda n: data_uri(rep.plots[n]))),
        "table1": md_table(table1_display(rep), max_rows=40, width=40),
        "families": ", ".join(families),
        "excluded_families": ", ".join(excluded) or "none",
        "report_html": dg.MetadataValue.path(str(paths["report.html"])),
        "report_dir": dg.MetadataValue.path(str(out)),
    })
    return versioned({"study": s.name, "families": families, "excluded": excluded, "verdict": rep.verdict,
            "files": sorted(str(p) for p in paths.values())})
