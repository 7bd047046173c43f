"""The whole report from a study's tables: which families it covers, Table 1 and 2, correlations, paired
differences, the generated verdict and the plots. Plain Python: the report asset calls it with its inputs."""

from __future__ import annotations

import json

import pandas as pd

from qup_assets import variants
from qup_assets.report.analysis import (
    combined_reward,
    headline_rewards,
    correlation_table,
    correlations,
    family_data,
    gap_sentences,
    paired_differences,
    paper_correlations,
    rft_sentences,
    verdict,
)
from qup_assets.report.breakdown import by_difficulty, selection_sentences, size_sentences, size_table, study_pairs
from qup_assets.report.exemplars import by_steps, disagreements, within_variant_correlations
from qup_assets.report.render import Report, make_plots
from qup_assets.report.reward_models import by_reward_model, one_line, reward_model_lines, verdict_by_reward_model
from qup_assets.report.tables import grid_table, reward_distribution, table1, table2
from qup_assets.report.texts import identical_shares, wrong_step_lines
from qup_assets.study import Study

# The tables per variant the report reads (`{variant}_{kind}`), besides base_eval, base_per_problem, rm_diagnostics.
KINDS = ("traces", "rewards", "adaptation", "checkpoints", "eval", "per_problem")


def family_sizes(base_models: dict[str, dict], families: list[str]) -> dict[str, tuple[str, float | None]]:
    """(lineage, parameters) per family, from its base_model (read from the model folder when it was built)."""
    return {f: (str(base_models[f].get("lineage") or "unknown"), base_models[f].get("parameters"))
            for f in families if f in base_models}


class NoFamilyReady(ValueError):
    """No family of the study has every variant evaluated yet."""


def _loss_curves(checkpoints: dict[str, pd.DataFrame], lr: float, batch_size: int) -> dict:
    out = {}
    for v, ck in checkpoints.items():
        if "loss_curve" not in ck.columns:
            continue
        for _, r in ck.iterrows():
            if r["lr"] == lr and r["batch_size"] == batch_size:
                out[(r["model_family"], v, r["objective"])] = [tuple(p) for p in json.loads(r["loss_curve"])]
    return out


def report_families(study: Study, tables: dict[str, pd.DataFrame]) -> tuple[list[str], list[str]]:
    """(families reported, families excluded): exactly the study file's families that have every variant
    evaluated; a partition whose family was removed from the file keeps its data and is named, never pooled."""
    evaluated = set.intersection(*[set(tables[f"{v}_eval"]["model_family"]) for v in variants.names()])
    present = set().union(*[set(df["model_family"]) for df in tables.values() if "model_family" in df])
    families = [f for f in study.families if f in evaluated]
    if not families:
        raise NoFamilyReady(f"no family of study {study.name!r} has every variant evaluated yet (study families: "
                            f"{list(study.families)}); materialize the *_eval assets first")
    return families, sorted(present - set(study.families))


def build_report(study: Study, tables: dict[str, pd.DataFrame], families: list[str], excluded: list[str]) -> Report:
    """`tables`: `{variant}_{kind}` for every variant and KINDS (traces optional), plus base_eval,
    base_per_problem, rm_diagnostics, and (optional) benchmarks, exemplars and base_model ({family: its
    base_model value})."""
    tr, ev = study.training, study.evaluation
    tables = {k: df[df["model_family"].isin(families)] if "model_family" in df else df for k, df in tables.items()}
    names = variants.names()
    rewards = {v: tables[f"{v}_rewards"] for v in names}
    adaptation = {v: tables[f"{v}_adaptation"] for v in names}
    evals = {v: tables[f"{v}_eval"] for v in names}
    checkpoints = {v: tables[f"{v}_checkpoints"] for v in names}
    per_problem = {v: tables[f"{v}_per_problem"] for v in [*names, "base"]}
    objectives = list(tr.objectives)
    samples = min(ev.bootstrap_samples, 1000)
    # one reward per trace from the headline RMs (several: z-scored first; Table 1 keeps every RM raw)
    scored = combined_reward(headline_rewards(rewards, study))

    def aligned(r: dict[str, pd.DataFrame]) -> list:
        """The families' aligned arrays under reward `r` (a family lacking some variant's data left out)."""
        return [f for f in (family_data(name, r, adaptation, per_problem, objectives, tr.lr, tr.batch_size)
                            for name in families) if f]

    fams = aligned(scored)
    corrs = correlations(fams, objectives, samples, ev.seed)
    rm_verdicts = verdict_by_reward_model({rm: aligned(r) for rm, r in by_reward_model(rewards).items()}, corrs,
                                          objectives, samples, ev.seed)
    traces = {v: tables[f"{v}_traces"] for v in names if f"{v}_traces" in tables}
    diffs = paired_differences(fams, objectives, samples, ev.seed, pairs=study_pairs())
    sizes = family_sizes(tables.get("base_model") or {}, families)
    exemplars = tables.get("exemplars", pd.DataFrame())
    difficulty, difficulty_lines = (by_difficulty(fams, tables["benchmarks"], objectives, min(samples, 200), ev.seed)
                                    if "benchmarks" in tables and fams else (pd.DataFrame(), []))
    rep = Report(
        study=study.name, description=study.description,
        synthetic=all(f.student.kind == "synthetic" for f in study.families.values()) and study.oracle.kind == "symbolic",
        objectives=objectives, reward_models=[rm.name for rm in study.reward_models], k=ev.k,
        table1=table1(rewards, evals, tables["base_eval"], objectives, tr.lr, tr.batch_size, samples, ev.seed),
        table2=table2(adaptation, scored, evals, objectives, tr.lr, tr.batch_size),
        correlations=correlation_table(corrs), differences=diffs, paper_correlations=paper_correlations(),
        verdict=verdict(corrs, objectives), gaps=gap_sentences(diffs), rft=rft_sentences(diffs),
        loss_curves=_loss_curves(checkpoints, tr.lr, tr.batch_size), families=families, excluded=excluded,
        grid=grid_table(evals), rm_diagnostics=tables["rm_diagnostics"].reset_index(drop=True),
        reward_distribution=reward_distribution(rewards),
        sizes=sizes, size_gaps=size_table(diffs, sizes),
        size_lines=size_sentences(fams, sizes, objectives, samples, ev.seed),
        selection=selection_sentences(diffs, fams), difficulty=difficulty, difficulty_lines=difficulty_lines,
        disagreements=disagreements(exemplars) if len(exemplars) else pd.DataFrame(),
        within=within_variant_correlations(exemplars, min(samples, 500), ev.seed) if len(exemplars) else pd.DataFrame(),
        exemplar_steps=by_steps(exemplars) if len(exemplars) else pd.DataFrame(),
        rm_verdicts=rm_verdicts, rm_lines=reward_model_lines(rm_verdicts),
        headline=one_line(corrs, objectives, rm_verdicts),
        identical=identical_shares(traces), wrong_steps=wrong_step_lines(traces),
    )
    rep.plots = make_plots(rep)
    return rep
