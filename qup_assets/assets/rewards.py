"""Perceived quality: the study's `reward_model`s, `rm_diagnostics` (can each tell right from wrong?) and
`{variant}_rewards` for every variant of the registry."""

import dagster as dg
import pandas as pd

from qup_assets.assets.inputs import common_traces
from qup_assets.assets.metadata import md_table, plot_markdown, table, versioned
from qup_assets.assets.partitions import model_family
from qup_assets.assets.resources import ACCELERATOR, StudyResource
from qup_assets.backends.base import BackendError
from qup_assets.backends.fingerprint import folder_fingerprint
from qup_assets.backends.hub import resolve_model
from qup_assets.problems.sources import world_difficulty
from qup_assets.reward.diagnostics import DIAGNOSTIC_COLUMNS, diagnose, diagnostic_samples
from qup_assets.reward.scorers import score_traces
from qup_assets.reward.process import process_rm_record
from qup_assets.reward.synthetic import provide_reward_model
from qup_assets.storage.tables import artifact_dir
from qup_assets.variants import Variant


@dg.asset(
    group_name="reward_models",
    code_version="3",
    kinds={"pytorch"},
    **ACCELERATOR,
    description="The study's reward models, resolved. A `synthetic` RM is trained here as real outcome RMs are: a "
    "language-model backbone pretrained on every writer's correct solutions, then a Bradley-Terry head on "
    "preference pairs, most of them right vs wrong within one writer's style (students' mistakes: slips, misread "
    "operands, skipped steps, broken text...), some both right with the Oracle's style preferred 70% of the time: "
    "what it learns is measured in rm_diagnostics. Copied from the shipped folder in data/world when its recipe "
    "matches (`qup world build`). A `symbolic_process` RM is the world's process RM: it checks every step against "
    "the problem and misjudges steps at a published PRM's ProcessBench error rates (its F1 on a labelled set of "
    "the world's solutions is measured here beside the published one). Others are HF folders resolved offline.",
)
def reward_model(context: dg.AssetExecutionContext, study: StudyResource, problem_pool: pd.DataFrame,
                 benchmarks: pd.DataFrame) -> dg.Output[dict]:
    s = study.load()
    out: dict = {}
    meta: dict = {}
    exclude = set(problem_pool["problem_id"]) | set(benchmarks["problem_id"])
    for rm in s.reward_models:
        if rm.kind == "symbolic_process":
            out[rm.name], calibration = process_rm_record(rm, world_difficulty(s))
            meta[f"{rm.name}/processbench"] = dg.MetadataValue.md(calibration)
            meta[f"{rm.name}/f1"] = dg.MetadataValue.float(out[rm.name]["f1"])
            continue
        if rm.kind != "synthetic":
            try:
                path = resolve_model(rm.model)
            except BackendError as e:
                raise dg.Failure(description=f"reward model {rm.name!r}: {e}") from None
            out[rm.name] = {"kind": rm.kind, "path": str(path), "fingerprint": folder_fingerprint(path)}
            meta[f"{rm.name}/path"] = dg.MetadataValue.path(str(path))
            continue
        with study.gpus(context, "model"):
            rep, origin = provide_reward_model(s.name, rm, world_difficulty(s), exclude,
                                               artifact_dir(study.store, "reward_model") / rm.name,
                                               log=context.log.info, warn=context.log.warning)
        out[rm.name] = {"kind": rm.kind, "path": rep["path"], "fingerprint": folder_fingerprint(rep["path"]),
                        "heldout_pair_accuracy": rep["heldout_pair_accuracy"], "origin": origin}
        kinds = pd.DataFrame({"pair kind": list(rep["pair_kinds"]), "pairs": list(rep["pair_kinds"].values())})
        kinds["held-out accuracy"] = kinds["pair kind"].map(rep["heldout_by_kind"]).round(3)
        meta.update({
            f"{rm.name}/origin": origin,
            f"{rm.name}/heldout_pair_accuracy": dg.MetadataValue.float(rep["heldout_pair_accuracy"]),
            f"{rm.name}/pairs": rep["pairs"],
            f"{rm.name}/pair_kinds": md_table(kinds),
            f"{rm.name}/writers": md_table(pd.DataFrame(
                {"writer": list(rep["writers"]), "pairs": list(rep["writers"].values())})),
        })
    context.add_output_metadata(meta)
    return versioned(out)


@dg.asset(
    partitions_def=model_family,
    group_name="reward_models",
    code_version="1",
    kinds={"parquet"},
    **ACCELERATOR,
    description="Does each reward model tell right from wrong? Every study RM scores up to `diagnostic_samples` "
    "correct and as many wrong (verified wrong, stopped normally) native samples of the family, one per problem "
    "where it can; P(correct outscores wrong) (ROC AUC) with a bootstrap 95% CI, score means and spreads. Below "
    "0.6 an RM's perceived quality says little about correctness, and the rewards assets and the report warn.",
)
def rm_diagnostics(context: dg.AssetExecutionContext, study: StudyResource, native_samples: pd.DataFrame,
                   problem_pool: pd.DataFrame, reward_model: dict) -> dg.Output[pd.DataFrame]:
    s = study.load()
    name = context.partition_key
    picked = diagnostic_samples(native_samples, s.evaluation.diagnostic_samples, s.sampling.seed).merge(
        problem_pool[["problem_id", "problem"]], on="problem_id")
    with study.gpus(context, "reward", name):
        scores = score_traces(s.reward_models, reward_model, study.cache_dir, name, picked, progress=context.log.info,
                              label="native samples:")
    rows = []
    for rm in s.reward_models:
        row = diagnose(name, rm.name, scores.loc[scores["reward_model"] == rm.name, "score"].reset_index(drop=True),
                       picked["correct"], s.evaluation.bootstrap_samples, s.sampling.seed)
        if row["warning"]:
            context.log.warning(row["warning"])
        rows.append(row)
    df = pd.DataFrame(rows, columns=DIAGNOSTIC_COLUMNS)
    meta: dict = {"dagster/row_count": len(df), "diagnostics": table(df.drop(columns=["model_family"]).round(3))}
    for r in rows:
        meta[f"{r['reward_model']}/p_correct_over_wrong"] = dg.MetadataValue.float(float(r["p_correct_over_wrong"]))
    context.add_output_metadata(meta)
    return versioned(df, context=context)


def _histogram(scores: pd.DataFrame, variant: str) -> str:
    def draw(ax):
        for rm, g in scores.groupby("reward_model"):
            ax.hist(g["score"], bins=30, alpha=0.6, label=rm)
        ax.set_xlabel("reward")
        ax.set_ylabel("traces")
        ax.legend()

    return plot_markdown(draw, f"{variant}: reward distribution")


def _rm_metadata(scores: pd.DataFrame, diagnostics: pd.DataFrame) -> dict:
    diag = diagnostics.set_index("reward_model")
    meta: dict = {}
    for rm, df in scores.groupby("reward_model", sort=False):
        q = df["score"].quantile([0.1, 0.25, 0.5, 0.75, 0.9])
        meta.update({
            f"{rm}/mean": dg.MetadataValue.float(float(df["score"].mean())),
            f"{rm}/std": dg.MetadataValue.float(float(df["score"].std())),
            f"{rm}/quantiles": md_table(pd.DataFrame({"q": q.index, "score": q.values.round(4)})),
        })
        if rm in diag.index:
            d = diag.loc[rm]
            meta[f"{rm}/p_correct_over_wrong"] = dg.MetadataValue.md(
                f"{d['p_correct_over_wrong']:.3f} [{d['ci_low']:.3f}, {d['ci_high']:.3f}] on "
                f"{d['n_correct']} correct / {d['n_wrong']} wrong native samples"
                + (f"\n\n**Warning:** {d['warning']}" if d["warning"] else ""))
    return meta


def build_rewards_asset(variant: Variant) -> dg.AssetsDefinition:
    @dg.asset(
        name=f"{variant.name}_rewards",
        partitions_def=model_family,
        group_name=variant.group,
        code_version="1",
        kinds={"parquet"},
        **ACCELERATOR,
        ins={"traces": dg.AssetIn(f"{variant.name}_traces")},
        description=f"Perceived quality of {variant.name} traces: every study reward model scores each (problem, "
        "trace) pair of the family's common problem set. Long format: model_family, problem_id, reward_model, "
        "score. Metadata carries each RM's P(correct > wrong) on the family's native samples (rm_diagnostics).",
    )
    def _asset(context: dg.AssetExecutionContext, study: StudyResource, traces: pd.DataFrame,
               common_problems: pd.DataFrame, problem_pool: pd.DataFrame, reward_model: dict,
               rm_diagnostics: pd.DataFrame) -> dg.Output[pd.DataFrame]:
        s = study.load()
        t = common_traces(traces, common_problems).merge(problem_pool[["problem_id", "problem"]], on="problem_id")
        with study.gpus(context, "reward", context.partition_key):
            out = score_traces(s.reward_models, reward_model, study.cache_dir, context.partition_key, t,
                               progress=context.log.info, label=variant.name)
        context.add_output_metadata({**_rm_metadata(out, rm_diagnostics), "dagster/row_count": len(out),
                                     "histogram": dg.MetadataValue.md(_histogram(out, variant.name))})
        return versioned(out, context=context)

    return _asset
