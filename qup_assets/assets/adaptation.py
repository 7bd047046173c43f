"""The adaptation side of the paradox before training: `{variant}_adaptation`, how surprising each variant's
traces are to the family's base model, for every variant of the registry."""

import time

import dagster as dg
import pandas as pd

from qup_assets.adaptation.perplexity import (
    adaptation_cost,
    attribution_table,
    global_ppl,
    loss_by_token,
    quartile_global,
    trace_metrics,
)
from qup_assets.assets.inputs import common_traces
from qup_assets.assets.metadata import md_table, plot_markdown, versioned
from qup_assets.assets.partitions import model_family
from qup_assets.assets.resources import ACCELERATOR, StudyResource
from qup_assets.backends.factory import open_scorer
from qup_assets.variants import Variant


def _attribution_plot(table: pd.DataFrame, variant: str) -> str:
    def draw(ax):
        x = range(len(table))
        ax.bar([i - 0.2 for i in x], table["share"], width=0.4, label=variant)
        ax.bar([i + 0.2 for i in x], table["share_native"], width=0.4, label="native")
        ax.set_xticks(list(x), table["token"], rotation=60, fontsize=7)
        ax.set_ylabel("share of total NLL")
        ax.legend()

    return plot_markdown(draw, f"tokens carrying the loss: {variant} vs native", figsize=(6, 3))


def build_adaptation_asset(variant: Variant) -> dg.AssetsDefinition:
    native = variant.source == "student"
    ins = {"traces": dg.AssetIn(f"{variant.name}_traces")}
    if not native:
        ins["native_traces"] = dg.AssetIn("native_traces")

    @dg.asset(
        name=f"{variant.name}_adaptation",
        partitions_def=model_family,
        group_name=variant.group,
        code_version="2",
        kinds={"parquet"},
        **ACCELERATOR,
        ins=ins,
        description=f"Adaptation cost of {variant.name} traces under the family's base model, prompt built by the "
        "chat template exactly as in training: per trace total NLL, tokens, perplexity and perplexity per quartile "
        "(Q1..Q4), plus semantic preservation, edit distance and each token's loss (tokens, token_nll); on the "
        "family's common problem set.",
    )
    def _asset(context: dg.AssetExecutionContext, study: StudyResource, base_model: dict,
               common_problems: pd.DataFrame, **inputs: pd.DataFrame) -> dg.Output[pd.DataFrame]:
        s = study.load()
        name = context.partition_key
        started = time.monotonic()
        traces = common_traces(inputs["traces"], common_problems)
        natives = None if native else common_traces(inputs["native_traces"], common_problems)
        with study.gpus(context, "model", name):
            lm = open_scorer(study.family(s, name), study.model_path(base_model))
            a = adaptation_cost(lm, study.cache_dir, name, traces, natives, progress=context.log.info)
        df = a.table
        table = attribution_table(loss_by_token(a.scored), loss_by_token(a.native_scored))
        context.add_output_metadata({
            "dagster/row_count": len(df),
            "global_ppl": dg.MetadataValue.float(global_ppl(df)),
            **{k: dg.MetadataValue.float(v) for k, v in quartile_global(df, a.scored).items()},
            "native_global_ppl": dg.MetadataValue.float(global_ppl(pd.DataFrame(
                [trace_metrics(t) for t in a.native_scored], columns=["nll", "n_tokens"]))),
            "mean_tokens": float(df["n_tokens"].mean()) if len(df) else 0.0,
            "mean_semantic_preservation": dg.MetadataValue.float(float(df["semantic_preservation"].mean())),
            "mean_edit_distance": dg.MetadataValue.float(float(df["edit_distance"].mean())),
            "loss_attribution": md_table(table.round(4), max_rows=12),
            "loss_attribution_plot": dg.MetadataValue.md(_attribution_plot(table, variant.name)),
            "cache_hits": a.cache_hits,
            "scored": a.scored_now,
            "wall_time_s": round(time.monotonic() - started, 1),
        })
        return versioned(df, context=context)

    return _asset
