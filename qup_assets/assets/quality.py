"""The two sides of the paradox before training: adaptation cost (perplexity) for every variant."""

import time

import dagster as dg
import pandas as pd

from qup_assets.adaptation.perplexity import (
    attribution_table,
    cached_logprobs,
    global_ppl,
    loss_by_token,
    quartile_global,
    trace_metrics,
)
from qup_assets.assets.metadata import md_table, plot_markdown, versioned
from qup_assets.assets.partitions import model_family
from qup_assets.assets.resources import ACCELERATOR, StudyResource
from qup_assets.backends.cache import ResponseCache

ALL_VARIANTS = ["native", "oracle_refined", "oracle_synthesized", "reference", "style_aligned"]
ADAPTATION_COLUMNS = ["model_family", "problem_id", "nll", "n_tokens", "ppl", "ppl_q1", "ppl_q2", "ppl_q3", "ppl_q4",
                      "semantic_preservation", "edit_distance"]


def on_common_set(traces: pd.DataFrame, common: pd.DataFrame) -> pd.DataFrame:
    """The traces of the family's common problem set, in the common set's order."""
    ids = common.loc[common["common"], "problem_id"]
    return ids.to_frame().merge(traces, on="problem_id", how="left")


def scoring_backend(family, model_path: str):
    """NLL is computed locally: the vLLM engine when the family uses vLLM, otherwise transformers."""
    if family.backend.kind == "vllm":
        from qup_assets.backends.vllm_backend import VLLMBackend

        return VLLMBackend(model_path, trust_remote_code=family.trust_remote_code)
    from qup_assets.backends.transformers_backend import TransformersBackend

    return TransformersBackend(model_path, trust_remote_code=family.trust_remote_code)


def _attribution_plot(table: pd.DataFrame, variant: str) -> str:
    def draw(ax):
        x = range(len(table))
        ax.bar([i - 0.2 for i in x], table["share"], width=0.4, label=variant)
        ax.bar([i + 0.2 for i in x], table["share_native"], width=0.4, label="native")
        ax.set_xticks(list(x), table["token"], rotation=60, fontsize=7)
        ax.set_ylabel("share of total NLL")
        ax.legend()

    return plot_markdown(draw, f"tokens carrying the loss: {variant} vs native", figsize=(6, 3))


def build_adaptation_asset(variant: str) -> dg.AssetsDefinition:
    traces_key = f"{variant}_traces"
    ins = {"traces": dg.AssetIn(traces_key)}
    if variant != "native":
        ins["native_traces"] = dg.AssetIn("native_traces")

    @dg.asset(
        name=f"{variant}_adaptation",
        partitions_def=model_family,
        group_name="students" if variant == "native" else variant,
        code_version="1",
        kinds={"parquet"},
        **ACCELERATOR,
        ins=ins,
        description=f"Adaptation cost of {variant} traces under the family's base model, prompt built by the chat "
        "template exactly as in training: per trace total NLL, tokens, perplexity and perplexity per quartile "
        "(Q1..Q4), plus semantic preservation and edit distance; on the family's common problem set.",
    )
    def _asset(context: dg.AssetExecutionContext, study: StudyResource, base_model: dict,
               common_problems: pd.DataFrame, **inputs: pd.DataFrame) -> dg.Output[pd.DataFrame]:
        s = study.load()
        name = context.partition_key
        fam = study.family(s, name)
        started = time.monotonic()
        traces = on_common_set(inputs["traces"], common_problems)
        native = on_common_set(inputs.get("native_traces", inputs["traces"]), common_problems)
        lm = scoring_backend(fam, study.model_path(base_model))
        with ResponseCache(study.cache_dir, lm.fingerprint[:16]) as cache:
            scored = cached_logprobs(lm, cache, list(traces["prompt"]), list(traces["completion"]), progress=context.log.info)
            native_scored = scored if variant == "native" else cached_logprobs(
                lm, cache, list(native["prompt"]), list(native["completion"]))
            hits, misses = cache.hits, cache.misses
        rows = pd.DataFrame([trace_metrics(t) for t in scored])
        df = pd.concat([pd.DataFrame({"model_family": name, "problem_id": traces["problem_id"].values}), rows], axis=1)
        if variant == "native":
            df["semantic_preservation"], df["edit_distance"] = 1.0, 0.0
        else:
            df["semantic_preservation"] = traces["semantic_preservation"].values
            df["edit_distance"] = traces["edit_distance"].values
        df = df[ADAPTATION_COLUMNS]
        table = attribution_table(loss_by_token(scored), loss_by_token(native_scored))
        quart = quartile_global(df, scored)
        context.add_output_metadata({
            "dagster/row_count": len(df),
            "global_ppl": dg.MetadataValue.float(global_ppl(df)),
            **{k: dg.MetadataValue.float(v) for k, v in quart.items()},
            "native_global_ppl": dg.MetadataValue.float(global_ppl(pd.DataFrame([trace_metrics(t) for t in native_scored]))),
            "mean_tokens": float(df["n_tokens"].mean()) if len(df) else 0.0,
            "mean_semantic_preservation": dg.MetadataValue.float(float(df["semantic_preservation"].mean())),
            "mean_edit_distance": dg.MetadataValue.float(float(df["edit_distance"].mean())),
            "loss_attribution": md_table(table.round(4), max_rows=12),
            "loss_attribution_plot": dg.MetadataValue.md(_attribution_plot(table, variant)),
            "cache_hits": hits,
            "scored": misses,
            "wall_time_s": round(time.monotonic() - started, 1),
        })
        return versioned(df)

    return _asset


adaptation_assets = [build_adaptation_asset(v) for v in ALL_VARIANTS]


# ---------------------------------------------------------------- perceived quality: reward models


@dg.asset(
    group_name="reward_models",
    code_version="1",
    kinds={"pytorch"},
    **ACCELERATOR,
    description="The study's reward models, resolved. A `synthetic` RM is trained here as real outcome RMs are: a "
    "language-model backbone pretrained on every writer's correct solutions, then a Bradley-Terry head on "
    "preference pairs, most of them right vs wrong within one writer's style (students' mistakes: slips, misread "
    "operands, skipped steps, broken text...), some both right with the Oracle's style preferred 70% of the time. "
    "Others are HF folders resolved offline.",
)
def reward_model(context: dg.AssetExecutionContext, study: StudyResource, problem_pool: pd.DataFrame,
                 benchmarks: pd.DataFrame) -> dg.Output[dict]:
    from qup_assets.backends.base import BackendError, stable_hash
    from qup_assets.backends.fingerprint import folder_fingerprint
    from qup_assets.backends.hub import resolve_model
    from qup_assets.problems.sources import problem_id, world_difficulty
    from qup_assets.reward.synthetic import train_reward_model
    from qup_assets.storage.tables import artifact_dir
    from qup_assets.world.generator import generate

    s = study.load()
    out: dict = {}
    meta: dict = {}
    for rm in s.reward_models:
        if rm.kind != "synthetic":
            try:
                path = resolve_model(rm.model)
            except BackendError as e:
                raise dg.Failure(description=f"reward model {rm.name!r}: {e}") from None
            out[rm.name] = {"kind": rm.kind, "path": str(path), "fingerprint": folder_fingerprint(path)}
            meta[f"{rm.name}/path"] = dg.MetadataValue.path(str(path))
            continue
        knobs = world_difficulty(s)
        exclude = set(problem_pool["problem_id"]) | set(benchmarks["problem_id"])
        seed = int(stable_hash("reward-model", rm.name)[:8], 16)
        problems = [p for p in generate(rm.train_problems, seed, **knobs) if problem_id(p.problem) not in exclude]
        path = artifact_dir(study.store, "reward_model") / rm.name
        rep = train_reward_model(problems, path, seed=0, steps=rm.train_steps, pretrain_steps=rm.pretrain_steps,
                                 style_pair_share=rm.style_pair_share, hidden_size=rm.hidden_size,
                                 num_layers=rm.num_layers, log=context.log.info)
        out[rm.name] = {"kind": rm.kind, "path": rep.path, "fingerprint": folder_fingerprint(rep.path),
                        "heldout_pair_accuracy": rep.heldout_pair_accuracy}
        kinds = pd.DataFrame({"pair kind": list(rep.pair_kinds), "pairs": list(rep.pair_kinds.values())})
        kinds["held-out accuracy"] = kinds["pair kind"].map(rep.heldout_by_kind).round(3)
        meta.update({
            f"{rm.name}/heldout_pair_accuracy": dg.MetadataValue.float(rep.heldout_pair_accuracy),
            f"{rm.name}/pairs": rep.pairs,
            f"{rm.name}/pair_kinds": md_table(kinds),
            f"{rm.name}/writers": md_table(pd.DataFrame(
                {"writer": list(rep.writers), "pairs": list(rep.writers.values())})),
        })
    context.add_output_metadata(meta)
    return versioned(out)


def _histogram(scores: pd.DataFrame, variant: str) -> str:
    def draw(ax):
        for rm, g in scores.groupby("reward_model"):
            ax.hist(g["score"], bins=30, alpha=0.6, label=rm)
        ax.set_xlabel("reward")
        ax.set_ylabel("traces")
        ax.legend()

    return plot_markdown(draw, f"{variant}: reward distribution")


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
    from qup_assets.reward.diagnostics import DIAGNOSTIC_COLUMNS, diagnose, diagnostic_samples
    from qup_assets.reward.scorers import cached_scores, open_study_reward_model

    s = study.load()
    name = context.partition_key
    picked = diagnostic_samples(native_samples, s.evaluation.diagnostic_samples, s.sampling.seed).merge(
        problem_pool[["problem_id", "problem"]], on="problem_id")
    rows = []
    for rm in s.reward_models:
        scorer = open_study_reward_model(rm, reward_model[rm.name]["path"])
        scores = pd.Series(cached_scores(scorer, study.cache_dir, picked["problem"], picked["completion"],
                                         progress=context.log.info, label=f"{rm.name} on native samples"))
        row = diagnose(name, rm.name, scores, picked["correct"], s.evaluation.bootstrap_samples, s.sampling.seed)
        if row["warning"]:
            context.log.warning(row["warning"])
        rows.append(row)
    df = pd.DataFrame(rows, columns=DIAGNOSTIC_COLUMNS)
    meta: dict = {"dagster/row_count": len(df), "diagnostics": md_table(df.drop(columns=["model_family"]).round(3))}
    for r in rows:
        meta[f"{r['reward_model']}/p_correct_over_wrong"] = dg.MetadataValue.float(float(r["p_correct_over_wrong"]))
    context.add_output_metadata(meta)
    return versioned(df)


def build_rewards_asset(variant: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=f"{variant}_rewards",
        partitions_def=model_family,
        group_name="students" if variant == "native" else variant,
        code_version="1",
        kinds={"parquet"},
        **ACCELERATOR,
        ins={"traces": dg.AssetIn(f"{variant}_traces")},
        description=f"Perceived quality of {variant} traces: every study reward model scores each (problem, trace) "
        "pair of the family's common problem set. Long format: model_family, problem_id, reward_model, score. "
        "Metadata carries each RM's P(correct > wrong) on the family's native samples (rm_diagnostics).",
    )
    def _asset(context: dg.AssetExecutionContext, study: StudyResource, traces: pd.DataFrame,
               common_problems: pd.DataFrame, problem_pool: pd.DataFrame, reward_model: dict,
               rm_diagnostics: pd.DataFrame) -> dg.Output[pd.DataFrame]:
        from qup_assets.reward.scorers import cached_scores, open_study_reward_model

        s = study.load()
        name = context.partition_key
        t = on_common_set(traces, common_problems).merge(problem_pool[["problem_id", "problem"]], on="problem_id")
        diag = rm_diagnostics.set_index("reward_model")
        frames = []
        meta: dict = {}
        for rm in s.reward_models:
            scorer = open_study_reward_model(rm, reward_model[rm.name]["path"])
            scores = cached_scores(scorer, study.cache_dir, t["problem"], t["completion"], progress=context.log.info,
                                   label=f"{variant} {rm.name} rewards")
            df = pd.DataFrame({"model_family": name, "problem_id": t["problem_id"].values, "reward_model": rm.name,
                               "score": scores})
            frames.append(df)
            q = df["score"].quantile([0.1, 0.25, 0.5, 0.75, 0.9])
            meta.update({
                f"{rm.name}/mean": dg.MetadataValue.float(float(df["score"].mean())),
                f"{rm.name}/std": dg.MetadataValue.float(float(df["score"].std())),
                f"{rm.name}/quantiles": md_table(pd.DataFrame({"q": q.index, "score": q.values.round(4)})),
            })
            if rm.name in diag.index:
                d = diag.loc[rm.name]
                meta[f"{rm.name}/p_correct_over_wrong"] = dg.MetadataValue.md(
                    f"{d['p_correct_over_wrong']:.3f} [{d['ci_low']:.3f}, {d['ci_high']:.3f}] on "
                    f"{d['n_correct']} correct / {d['n_wrong']} wrong native samples"
                    + (f"\n\n**Warning:** {d['warning']}" if d["warning"] else ""))
        out = pd.concat(frames, ignore_index=True)
        meta["dagster/row_count"] = len(out)
        meta["histogram"] = dg.MetadataValue.md(_histogram(out, variant))
        context.add_output_metadata(meta)
        return versioned(out)

    return _asset


reward_assets = [build_rewards_asset(v) for v in ALL_VARIANTS]
