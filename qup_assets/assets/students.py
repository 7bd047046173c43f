"""`base_model`, `native_samples`, `native_traces`: each family's student and its own (SLM-RFT) data."""

import time

import dagster as dg
import pandas as pd

from qup_assets.assets.metadata import md_table, plot_markdown, versioned
from qup_assets.assets.partitions import model_family
from qup_assets.assets.resources import ACCELERATOR, StudyResource
from qup_assets.backends.base import BackendError, SamplingParams
from qup_assets.backends.cache import ResponseCache
from qup_assets.backends.context import check_prompt_tokens
from qup_assets.backends.factory import load_tokenizer, open_backend
from qup_assets.backends.hub import describe_model, resolve_model
from qup_assets.backends.prompting import render_prompt
from qup_assets.common import format_params
from qup_assets.problems.sources import world_difficulty
from qup_assets.sampling.native import no_traces_message, sample_verified, sampling_summary, select_traces
from qup_assets.storage.tables import artifact_dir
from qup_assets.world.student import provide_student


def _loss_plot(curve: list) -> str:
    def draw(ax):
        ax.plot([s for s, _ in curve], [l for _, l in curve])
        ax.set_xlabel("step")
        ax.set_ylabel("loss (solution tokens)")
        ax.set_yscale("log")

    return plot_markdown(draw, "pretraining loss")


@dg.asset(
    partitions_def=model_family,
    group_name="students",
    code_version="2",
    kinds={"pytorch"},
    **ACCELERATOR,
    description=(
        "The family's student before any fine-tuning. An HF model (local folder or the local HF cache) is resolved "
        "and recorded (revision, content fingerprint, parameters, dtype, chat template); a synthetic family is "
        "pretrained from scratch on problems (never pool or benchmark ones) solved in its own style: copied from the "
        "shipped folder in data/world when its recipe matches (`qup world build`), else pretrained in this run."
    ),
)
def base_model(context: dg.AssetExecutionContext, study: StudyResource, benchmarks: pd.DataFrame,
               problem_pool: pd.DataFrame) -> dg.Output[dict]:
    s = study.load()
    name = context.partition_key
    fam = study.family(s, name)
    started = time.monotonic()
    if fam.student.kind == "hf":
        try:
            info = describe_model(resolve_model(fam.student.model, fam.student.revision))
        except BackendError as e:
            raise dg.Failure(description=str(e)) from None
        info.update(name=fam.student.model, lineage=fam.lineage or info["lineage"])
        _check_prompt(name, fam, info["path"])
        context.add_output_metadata(
            {
                "model": fam.student.model,
                "lineage": info["lineage"],
                "size": format_params(info["parameters"]),
                "revision": str(info["revision"]),
                "fingerprint": info["fingerprint"][:16],
                "parameters": info["parameters"] or 0,
                "dtype": info["dtype"],
                "chat_template": dg.MetadataValue.md(f"```jinja\n{info['chat_template'] or '(none)'}\n```"),
                "model_path": dg.MetadataValue.path(info["path"]),
            }
        )
        return versioned(info)


    spec = fam.student
    exclude = set(problem_pool["problem_id"]) | set(benchmarks["problem_id"])
    out = artifact_dir(study.store, "base_model", name) / "model"
    with study.verifier(s) as verifier, study.gpus(context, "model", name):
        built, origin = provide_student(s.name, name, spec, world_difficulty(s), exclude, out, verifier,
                                        log=context.log.info, warn=context.log.warning)
    info = describe_model(out)
    _check_prompt(name, fam, out)
    info.update(name=name, lineage=fam.lineage or info["lineage"], heldout_greedy_accuracy=built["heldout_greedy_accuracy"],
                tokens_seen=built["tokens_seen"], store_path=str(out.relative_to(study.store)), origin=origin)
    context.add_output_metadata(
        {
            "origin": origin,
            "architecture": info["architecture"],
            "lineage": info["lineage"],
            "parameters": info["parameters"] or 0,
            "size": format_params(info["parameters"]),
            "tokens_seen": built["tokens_seen"],
            "pretrain_steps": built["steps"],
            "pretrain_seconds": round(built["seconds"], 1),
            "tokens_per_second": round(built["tokens_per_second"]),
            "heldout_greedy_accuracy": dg.MetadataValue.float(built["heldout_greedy_accuracy"]),
            "heldout_problems": built["heldout_problems"],
            "wall_time_s": round(time.monotonic() - started, 1),
            "loss_curve": dg.MetadataValue.md(_loss_plot(built["loss_curve"])),
            "heldout_examples": md_table(pd.DataFrame(built["heldout_examples"]), max_rows=5, width=200),
            "fingerprint": info["fingerprint"][:16],
            "model_path": dg.MetadataValue.path(info["path"]),
        }
    )
    return versioned(info)


def _check_prompt(name: str, fam, model_path) -> None:
    """The family's prompt renders with its model's tokenizer (a chat template it has, plain-template markers
    it knows), so a mismatched prompt fails here, before any sample is drawn."""
    try:
        render_prompt(load_tokenizer(model_path, fam.trust_remote_code), fam.prompt, "What is 1 + 1?")
    except ValueError as e:
        raise dg.Failure(description=f"family {name}: {e}") from None


def _prompts(study: StudyResource, family_name: str, base_model: dict, problems: pd.DataFrame,
             tok=None) -> list[str]:
    """The family's prompt for each problem, rendered with the base model's tokenizer (`tok`, if already loaded)."""
    fam = study.family(study.load(), family_name)
    tok = tok or load_tokenizer(study.model_path(base_model), fam.trust_remote_code)
    return [render_prompt(tok, fam.prompt, p) for p in problems["problem"]]


@dg.asset(
    partitions_def=model_family,
    group_name="students",
    code_version="1",
    kinds={"parquet"},
    **ACCELERATOR,
    description=(
        "N samples per pool problem from the base model at the study's temperature (paper: N=8, T=1.0), each "
        "verified. Served through the response cache: a killed run resumes, an unchanged re-run costs ~nothing."
    ),
)
def native_samples(context: dg.AssetExecutionContext, study: StudyResource, problem_pool: pd.DataFrame,
                   base_model: dict) -> dg.Output[pd.DataFrame]:
    s = study.load()
    name = context.partition_key
    fam = study.family(s, name)
    tok = load_tokenizer(study.model_path(base_model), fam.trust_remote_code)
    prompts = _prompts(study, name, base_model, problem_pool, tok)
    with study.gpus(context, "generate", name):
        try:
            longest = check_prompt_tokens(tok, prompts, list(problem_pool["problem_id"]), s.max_prompt_tokens, "pool")
            lm = open_backend(fam, study.model_path(base_model), seed=s.sampling.seed)
        except BackendError as e:
            raise dg.Failure(description=str(e)) from None
        sp = s.sampling
        params = SamplingParams(temperature=sp.temperature, top_p=sp.top_p, max_tokens=sp.max_tokens, seed=sp.seed)
        started = time.monotonic()
        with ResponseCache(study.cache_dir, lm.fingerprint[:16]) as cache, study.verifier(s) as verifier:
            if cache.corrupt_lines:
                context.log.warning(f"response cache: skipped {cache.corrupt_lines} truncated line(s) from an "
                                    "interrupted run")
            df = sample_verified(lm, cache, name, problem_pool, prompts, sp.n, params, verifier,
                                 progress=context.log.info)
            hits, misses = cache.hits, cache.misses
    summary = sampling_summary(df, sp.n)
    context.log.info(f"{name}: pass@1 {summary['pass@1']:.1%}, pass@{sp.n} {summary[f'pass@{sp.n}']:.1%}")
    context.add_output_metadata(
        {
            "dagster/row_count": len(df),
            **{k: dg.MetadataValue.float(v) if isinstance(v, float) else v for k, v in summary.items()},
            "solvable_fraction": dg.MetadataValue.float(summary["solvable_problems"] / max(1, summary["problems"])),
            "cache_hits": hits,
            "generated": misses,
            "longest_prompt_tokens": longest,
            "wall_time_s": round(time.monotonic() - started, 1),
            "verdicts": md_table(df["verdict"].value_counts().rename_axis("verdict").reset_index(), max_rows=10),
            "sample": md_table(df[["problem_id", "sample_idx", "completion", "extracted_answer", "verdict"]], max_rows=6, width=160),
        }
    )
    return versioned(df, context=context)


@dg.asset(
    partitions_def=model_family,
    group_name="students",
    code_version="1",
    kinds={"parquet"},
    description=(
        "SLM-RFT traces: exactly one correct, lightly cleaned sample per solvable problem, chosen by a seeded hash. "
        "These problem ids are the set every other variant of the family must cover."
    ),
)
def native_traces(context: dg.AssetExecutionContext, study: StudyResource, problem_pool: pd.DataFrame,
                  native_samples: pd.DataFrame, base_model: dict) -> dg.Output[pd.DataFrame]:
    s = study.load()
    solvable_ids = set(native_samples.loc[native_samples["correct"], "problem_id"])
    problems = problem_pool[problem_pool["problem_id"].isin(solvable_ids)]
    prompts = dict(zip(problems["problem_id"], _prompts(study, context.partition_key, base_model, problems)))
    with study.verifier(s) as verifier:
        traces, stats = select_traces(native_samples, problem_pool, prompts, s.sampling.seed, verifier)
    if traces.empty:
        raise dg.Failure(description=no_traces_message(context.partition_key, native_samples))
    context.add_output_metadata(
        {
            "dagster/row_count": len(traces),
            "solvable_fraction": dg.MetadataValue.float(len(traces) / max(1, len(problem_pool))),
            "cleaned_changed": stats["cleaned_changed"],
            "cleaning_reverted": stats["cleaning_reverted"],
            # verified answers in samples that never stopped (max_tokens): rejected as traces
            "rejected_cut_at_max_tokens": stats["cut_at_max_tokens"],
            "mean_tokens": float(traces["n_tokens"].mean()),
            "sample": md_table(traces[["problem_id", "completion", "answer"]], max_rows=4, width=300),
        }
    )
    return versioned(traces, context=context)


@dg.asset_check(asset=native_traces, blocking=True, description="Every native trace verifies against the gold answer.")
def native_traces_verify(study: StudyResource, native_traces: pd.DataFrame) -> dg.AssetCheckResult:
    with study.verifier() as verifier:
        res = verifier.verify_many(zip(native_traces["answer"], native_traces["completion"]))
    bad = [f"{f}/{pid}" for f, pid, r in zip(native_traces["model_family"], native_traces["problem_id"], res) if not r.correct]
    # The check sees every materialized family: a problem may appear once per family, never twice in one.
    dupes = int(native_traces.duplicated(["model_family", "problem_id"]).sum())
    return dg.AssetCheckResult(
        passed=not bad and dupes == 0,
        metadata={"traces": len(native_traces), "failing": len(bad), "failing_ids": ", ".join(bad[:20]) or "none",
                  "duplicate_traces": dupes},
    )
