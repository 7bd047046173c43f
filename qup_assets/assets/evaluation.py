"""The utility side of the paradox: benchmark accuracy of every checkpoint (`{variant}_eval`) and of the base
model (`base_eval`), each with its per-problem accuracies (`{variant}_per_problem`, `base_per_problem`) that
the report's paired bootstraps read."""

import time

import dagster as dg
import pandas as pd

from qup_assets.assets.inputs import require_rows
from qup_assets.assets.metadata import table, versioned
from qup_assets.assets.partitions import model_family
from qup_assets.assets.resources import ACCELERATOR, StudyResource
from qup_assets.backends.base import BackendError
from qup_assets.evaluation.evaluate import evaluate_model
from qup_assets.evaluation.metrics import EVAL_COLUMNS, MACRO
from qup_assets.study import Study
from qup_assets.variants import Variant

EVAL_DESCRIPTION = ("k samples per item at the study's temperature and max tokens, verified; Avg@k with a bootstrap "
                    "95% CI over problems, pass@k, answer-extraction failure and truncation rates, per benchmark "
                    "and macro-averaged.")
PER_PROBLEM_DESCRIPTION = ("Per-problem accuracy (mean over the k samples) of every checkpoint in {eval}, one row "
                           "per benchmark item: what the report's paired bootstraps resample.")


def _evaluate(context: dg.AssetExecutionContext, study: StudyResource, s: Study, family: str, model_path: str,
              benchmarks: pd.DataFrame, label: str) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """evaluate_model with the study's family, cache and verifier; a backend that cannot open fails the asset."""
    with study.verifier(s) as verifier:
        try:
            return evaluate_model(family, study.family(s, family), model_path, benchmarks, s.evaluation,
                                  study.cache_dir, verifier, label=label, log=context.log.info,
                                  max_prompt_tokens=s.max_prompt_tokens)
        except BackendError as e:
            raise dg.Failure(description=f"{family}/{label}: {e}") from None


def _outputs(context: dg.AssetExecutionContext, eval_name: str, tables: list[pd.DataFrame],
             problems: list[pd.DataFrame], stats: dict, started: float):
    """The eval table (with its metadata) and its per-problem rows: the multi-asset's outputs that were selected
    (one alone is recomputed from the same cached samples, so the two always agree)."""
    df = pd.concat(tables, ignore_index=True)[EVAL_COLUMNS]
    pp = pd.concat(problems, ignore_index=True)
    macro = df[df["benchmark"] == MACRO]
    show = df.assign(ci=[f"[{lo:.3f}, {hi:.3f}]" for lo, hi in zip(df["ci_low"], df["ci_high"])])
    meta = {
        "dagster/row_count": len(df),
        "avg_at_k": table(show[["objective", "lr", "batch_size", "benchmark", "avg_at_k", "ci", "pass_at_k",
                                "n_problems", "no_answer_rate", "truncation_rate"]].round(4), max_rows=60),
        "wall_time_s": round(time.monotonic() - started, 1),
        **stats,
    }
    for _, r in macro.iterrows():  # numbers, so the UI plots them over materializations
        for col, key in (("avg_at_k", ""), ("ci_low", "/ci_low"), ("ci_high", "/ci_high")):
            meta[f"macro_avg_at_k/{r['objective']}{key}"] = dg.MetadataValue.float(float(r[col]))
    per = eval_name.replace("_eval", "_per_problem")
    if eval_name in context.selected_output_names:
        yield versioned(df, meta, output_name=eval_name, context=context)
    if per in context.selected_output_names:
        yield versioned(pp, {"dagster/row_count": len(pp), "problems": int(pp["problem_id"].nunique())},
                        output_name=per, context=context)


def _outs(prefix: str, group: str, what: str) -> dict[str, dg.AssetOut]:
    """Both outputs optional: a run that selects one of them (qup run --select key:base_eval) gets that one."""
    return {
        f"{prefix}_eval": dg.AssetOut(group_name=group, code_version="1", kinds={"parquet"}, is_required=False,
                                      description=f"Benchmark accuracy of {what}: {EVAL_DESCRIPTION}"),
        f"{prefix}_per_problem": dg.AssetOut(group_name=group, code_version="1", kinds={"parquet"}, is_required=False,
                                             description=PER_PROBLEM_DESCRIPTION.format(eval=f"{prefix}_eval")),
    }


def build_eval_asset(v: Variant) -> dg.AssetsDefinition:
    variant = v.name

    @dg.multi_asset(
        name=f"{variant}_evaluation",
        outs=_outs(variant, v.group, f"every {variant} checkpoint"),
        partitions_def=model_family,
        ins={"checkpoints": dg.AssetIn(f"{variant}_checkpoints")},
        can_subset=True,
        **ACCELERATOR,
    )
    def _asset(context: dg.AssetExecutionContext, study: StudyResource, checkpoints: pd.DataFrame,
               benchmarks: pd.DataFrame):
        s = study.load()
        name = context.partition_key
        started = time.monotonic()
        tables, problems, stats = [], [], {"cache_hits": 0, "generated": 0}
        require_rows(checkpoints, f"{variant}_checkpoints[{name}]", "no checkpoint to evaluate (training.objectives?)")
        require_rows(benchmarks, "benchmarks", "no benchmark item to evaluate on")
        with study.gpus(context, "generate", name):
            for _, ck in checkpoints.iterrows():
                path = study.store / ck["checkpoint"]
                if not (path / "config.json").is_file():
                    raise dg.Failure(description=f"{name}/{variant}: checkpoint folder {path} is missing; "
                                     f"re-materialize {variant}_checkpoints for partition {name}")
                label = f"{variant}/{path.name}"
                table, probs, st = _evaluate(context, study, s, name, str(path), benchmarks, label)
                ident = {"model_family": name, "objective": ck["objective"], "lr": ck["lr"],
                         "batch_size": ck["batch_size"]}
                tables.append(table.assign(**ident))
                problems.append(probs.assign(**ident))
                stats = {k: stats[k] + st[k] for k in stats}
        yield from _outputs(context, f"{variant}_eval", tables, problems, stats, started)

    return _asset


@dg.multi_asset(
    name="base_evaluation",
    outs=_outs("base", "students", "the family's base model before any fine-tuning (objective 'none'), the "
               "reference line every variant's checkpoints are compared with, same protocol"),
    partitions_def=model_family,
    can_subset=True,
    **ACCELERATOR,
)
def base_evaluation(context: dg.AssetExecutionContext, study: StudyResource, base_model: dict,
                    benchmarks: pd.DataFrame):
    s = study.load()
    name = context.partition_key
    started = time.monotonic()
    require_rows(benchmarks, "benchmarks", "no benchmark item to evaluate on")
    with study.gpus(context, "generate", name):
        table, probs, stats = _evaluate(context, study, s, name, study.model_path(base_model), benchmarks, "base")
    ident = {"model_family": name, "objective": "none", "lr": float("nan"), "batch_size": 0}
    yield from _outputs(context, "base_eval", [table.assign(**ident)], [probs.assign(**ident)], stats, started)
