"""`{variant}_traces` for every non-native variant of the registry, on the native traces' problems, and the
family's `common_problems`: the set every variant has a verified trace for."""

import contextlib
import time

import dagster as dg
import pandas as pd

from qup_assets.adaptation.selection import select_lowest_nll, student_candidates, variant_candidates
from qup_assets.assets.metadata import md_table, versioned
from qup_assets.assets.partitions import model_family
from qup_assets.assets.resources import ACCELERATOR, StudyResource
from qup_assets.backends.base import BackendError
from qup_assets.backends.factory import open_scorer
from qup_assets.oracle.factory import open_variant_oracle, oracle_items
from qup_assets.oracle.judge import judge_preservation
from qup_assets.oracle.llm import PROMPT_VERSIONS, LLMOracle, prompt_template
from qup_assets.oracle.traces import OracleCollapsed, common_set_message, variant_frame, write_variant
from qup_assets.variants import Variant, common_set, rewrites, sources


def _side_by_side(native: pd.DataFrame, variant: pd.DataFrame, n: int = 3) -> str:
    merged = native[["problem_id", "completion"]].merge(variant[["problem_id", "completion", "correct"]],
                                                       on="problem_id", suffixes=("_native", "_variant"))
    merged = merged[merged["correct"]]
    changed = merged[merged["completion_native"] != merged["completion_variant"]]
    rows = pd.concat([changed, merged]).drop_duplicates("problem_id").head(n)

    def cell(t):
        return str(t).replace("|", "\\|").replace("\n", "<br>")

    lines = ["| problem | native | variant |", "|---|---|---|"]
    lines += [f"| {r.problem_id} | {cell(r.completion_native)} | {cell(r.completion_variant)} |" for r in rows.itertuples()]
    return "\n".join(lines)


def _metadata(df: pd.DataFrame, native: pd.DataFrame, seconds: float, oracle_prompt: str | None) -> dict:
    ok = df[df["correct"]]
    meta = {
        "dagster/row_count": len(df),
        "success_rate": dg.MetadataValue.float(float(df["correct"].mean()) if len(df) else 0.0),
        "retry_rate": dg.MetadataValue.float(float((df["attempts"] > 1).mean()) if len(df) else 0.0),
        "dropped": int((~df["correct"]).sum()),
        "repaired_rate": dg.MetadataValue.float(float((ok["repaired_steps"] > 0).mean()) if len(ok) else 0.0),
        "mean_length_vs_native": dg.MetadataValue.float(
            float(ok["n_chars"].mean() / native["completion"].str.len().mean()) if len(ok) else 0.0),
        "mean_edit_distance": dg.MetadataValue.float(float(ok["edit_distance"].mean()) if len(ok) else 0.0),
        "mean_semantic_preservation": dg.MetadataValue.float(float(ok["semantic_preservation"].mean()) if len(ok) else 0.0),
        **({"mean_semantic_judge": dg.MetadataValue.float(float(ok["semantic_judge"].dropna().mean())),
            "semantic_judge_unreadable": int(ok["semantic_judge"].isna().sum())}
           if ok["semantic_judge"].notna().any() else {}),
        "oracle": str(df["oracle"].iloc[0]) if len(df) else "",
        "examples": dg.MetadataValue.md(_side_by_side(native, df)),
        "wall_time_s": round(seconds, 1),
    }
    if (~df["correct"]).any():
        meta["failures"] = md_table(df.loc[~df["correct"], ["problem_id", "reason"]], max_rows=10, width=200)
    if oracle_prompt:
        meta["oracle_prompt"] = dg.MetadataValue.md(f"```text\n{oracle_prompt}\n```")
    return meta


def build_traces_asset(variant: Variant) -> dg.AssetsDefinition:
    if variant.source == "selected":
        return build_selected_asset(variant)
    task = variant.oracle_task

    @dg.asset(
        name=f"{variant.name}_traces",
        partitions_def=model_family,
        group_name=variant.group,
        code_version=f"3-{PROMPT_VERSIONS[task]}" if task else "3",
        kinds={"parquet"},
        **(ACCELERATOR if task else {}),
        description=variant.description + " One row per native trace (same problem ids); failures are kept with "
        "their reason. Columns include semantic_preservation and edit_distance against the native trace.",
    )
    def _asset(context: dg.AssetExecutionContext, study: StudyResource, native_traces: pd.DataFrame,
               problem_pool: pd.DataFrame) -> dg.Output[pd.DataFrame]:
        s = study.load()
        name = context.partition_key
        fam = study.family(s, name)
        started = time.monotonic()
        items = oracle_items(native_traces, problem_pool)
        stats, judged = {}, None
        with contextlib.ExitStack() as stack:
            verifier = stack.enter_context(study.verifier(s))
            stack.enter_context(study.gpus(context, "oracle", name))
            try:
                oracle = open_variant_oracle(variant, s, fam, problem_pool, verifier, study.cache_dir, stack)
                context.log.info(f"{name}: {variant.name} by {oracle.name} on {len(items)} native traces")
                results = write_variant(variant, oracle, items, s.oracle)
                llm = isinstance(oracle, LLMOracle)
                if llm and s.oracle.semantic_judge:
                    judged = judge_preservation(oracle.lm, oracle.cache, list(native_traces["completion"]),
                                                [r.completion if r.ok else None for r in results],
                                                oracle.chat_format, progress=context.log.info)
            except BackendError as e:
                raise dg.Failure(description=f"{name}/{variant.name}: oracle unavailable: {e}") from None
            except OracleCollapsed as e:
                raise dg.Failure(description=f"{name}/{str(e)}") from None
            if llm:
                stats = {"oracle_cache_hits": oracle.cache.hits, "oracle_generated": oracle.cache.misses}
        df = variant_frame(name, native_traces, results, oracle.name, judged)
        prompt = prompt_template(task) if llm else None
        context.add_output_metadata({**_metadata(df, native_traces, time.monotonic() - started, prompt), **stats})
        return versioned(df, context=context)

    return _asset


def build_selected_asset(variant: Variant) -> dg.AssetsDefinition:
    """A selected variant: per native trace's problem, the verified candidate of its sources with the lowest
    per-token NLL under the base model (adaptation/selection.py)."""
    rivals = [v.name for v in sources(*variant.candidates) if v.source != "student" and v.name != variant.name]
    ins = {f"{v}_traces": dg.AssetIn(f"{v}_traces") for v in rivals}
    if "student" in variant.candidates:
        ins["native_samples"] = dg.AssetIn("native_samples")

    @dg.asset(
        name=f"{variant.name}_traces",
        partitions_def=model_family,
        group_name=variant.group,
        code_version="1",
        kinds={"parquet"},
        ins=ins,
        **ACCELERATOR,
        description=variant.description + f" Candidates: {', '.join(variant.candidates)} traces. One row per native "
        "trace, with where the chosen trace came from (selected_from), how many candidates competed and their "
        "per-token NLL.",
    )
    def _asset(context: dg.AssetExecutionContext, study: StudyResource, native_traces: pd.DataFrame,
               base_model: dict, **inputs: pd.DataFrame) -> dg.Output[pd.DataFrame]:
        s = study.load()
        name = context.partition_key
        started = time.monotonic()
        frames = [variant_candidates({v: inputs[f"{v}_traces"] for v in rivals})]
        if "native_samples" in inputs:
            with study.verifier(s) as verifier:
                frames.insert(0, student_candidates(native_traces, inputs["native_samples"], verifier))
        candidates = pd.concat(frames, ignore_index=True)
        context.log.info(f"{name}: {len(candidates)} verified candidates for {len(native_traces)} problems")
        with study.gpus(context, "model", name):
            lm = open_scorer(study.family(s, name), study.model_path(base_model))
            df = select_lowest_nll(lm, study.cache_dir, name, native_traces, candidates, progress=context.log.info)
        chosen = df["selected_from"].where(~df["selected_from"].str.startswith("student sample"), "student sample")
        share = chosen.value_counts(normalize=True).rename_axis("selected_from").rename("share").reset_index()
        context.add_output_metadata({
            "dagster/row_count": len(df),
            "candidates_per_problem": dg.MetadataValue.float(float(df["candidates"].mean()) if len(df) else 0.0),
            "selected_from": md_table(share.round(3)),
            "mean_nll_per_token": dg.MetadataValue.float(float(df["nll_per_token"].mean()) if len(df) else 0.0),
            "native_mean_nll_per_token": dg.MetadataValue.float(
                float(df["native_nll_per_token"].mean()) if len(df) else 0.0),
            "mean_edit_distance": dg.MetadataValue.float(float(df["edit_distance"].mean()) if len(df) else 0.0),
            "examples": dg.MetadataValue.md(_side_by_side(native_traces, df)),
            "wall_time_s": round(time.monotonic() - started, 1),
        })
        return versioned(df, context=context)

    return _asset


def build_common_problems() -> tuple[dg.AssetsDefinition, dg.AssetChecksDefinition]:
    """The common set over every non-native variant of the registry, and its size check."""
    names = [v.name for v in rewrites()]

    @dg.asset(
        partitions_def=model_family,
        group_name="students",
        code_version="1",
        kinds={"parquet"},
        ins={f"{v}_traces": dg.AssetIn(f"{v}_traces") for v in names},
        description="The problem set every variant of the family (native included) has a verified trace for; every "
        "score, training run, evaluation and report of the family uses exactly this set. Problems left out are "
        "kept with the variants that failed and why.",
    )
    def common_problems(context: dg.AssetExecutionContext, native_traces: pd.DataFrame,
                        **traces: pd.DataFrame) -> dg.Output[pd.DataFrame]:
        tables = {v: traces[f"{v}_traces"] for v in names}
        out = common_set(context.partition_key, native_traces, tables)
        retry_rates = {v: float((df["attempts"] > 1).mean()) for v, df in tables.items()}
        context.add_output_metadata({
            "dagster/row_count": int(out["common"].sum()),
            "native_traces": len(out),
            "common_fraction": dg.MetadataValue.float(float(out["common"].mean()) if len(out) else 0.0),
            "retry_rate_by_variant": md_table(pd.DataFrame({"variant": list(retry_rates),
                                                            "retried": list(retry_rates.values())})),
            "left_out": md_table(out.loc[~out["common"], ["problem_id", "reason"]], max_rows=10, width=200),
        })
        return versioned(out)

    @dg.asset_check(asset=common_problems, blocking=True, description="Reports the share of problems whose "
                    "rewrites were retried or dropped; below study.min_common_fraction of native_traces it fails and "
                    "stops the run there, saying per variant how many rewrites verified and why the others did not.")
    def common_problems_large_enough(study: StudyResource, common_problems: pd.DataFrame) -> dg.AssetCheckResult:
        # The check reads every materialized family: each must keep min_common_fraction of its native traces.
        frac = float(common_problems["common"].mean()) if len(common_problems) else 0.0
        need = study.load().min_common_fraction
        small = [f for f, g in common_problems.groupby("model_family") if g["common"].mean() < need]
        dropped = common_problems.loc[~common_problems["common"], "reason"]
        return dg.AssetCheckResult(
            passed=not small and len(common_problems) > 0,
            description="\n\n".join(f"{f}: " + common_set_message(common_problems[common_problems["model_family"] == f],
                                                                     need) for f in small) or None,
            metadata={"common_fraction": frac, "required": need, "dropped": int(len(dropped)),
                      "dropped_share": float(len(dropped) / max(1, len(common_problems))),
                      "retried_share": float((common_problems["retried_variants"] != "").mean())
                      if len(common_problems) else 0.0,
                      "families_below": ", ".join(small) or "none",
                      "dropped_by_variant": ", ".join(sorted({r.split(":")[0] for rr in dropped
                                                              for r in rr.split("; ")})) or "none"},
        )

    return common_problems, common_problems_large_enough
