"""The four non-native datasets of the paper, on the same problems as native_traces, and their common set."""

import time

import dagster as dg
import pandas as pd

from qup_assets.adaptation.judge import judge_preservation
from qup_assets.adaptation.similarity import normalized_edit_distance, semantic_preservation
from qup_assets.assets.metadata import md_table, versioned
from qup_assets.assets.partitions import model_family
from qup_assets.assets.resources import ACCELERATOR, StudyResource
from qup_assets.backends.base import BackendError
from qup_assets.backends.cache import ResponseCache
from qup_assets.oracle.base import OracleItem, OracleResult
from qup_assets.oracle.llm import PROMPT_VERSIONS, LLMOracle, prompt_template
from qup_assets.oracle.symbolic import SymbolicOracle
from qup_assets.study import Study

ORACLE_TASKS = {"oracle_refined": "refine", "oracle_synthesized": "synthesize", "style_aligned": "style_align"}
VARIANTS = ["oracle_refined", "oracle_synthesized", "reference", "style_aligned"]
VARIANT_COLUMNS = [
    "model_family", "problem_id", "prompt", "completion", "correct", "oracle", "attempts", "reason",
    "repaired_steps", "semantic_preservation", "semantic_judge", "edit_distance", "n_chars",
]
DESCRIPTIONS = {
    "oracle_refined": "Oracle-Refined: the Oracle polishes each native trace into its own clear, rigorous style and "
    "fixes anything wrong, the student's steps kept (the symbolic Oracle rewrites a share of the traces in its "
    "compact form and hands the rest back with the repairs only).",
    "oracle_synthesized": "Oracle-Synthesized: the Oracle solves each problem from scratch, in its own style.",
    "reference": "The dataset's own reference solution for the same problems (the NuminaMath-subset analogue).",
    "style_aligned": "Style-Aligned Refinement: the Oracle fixes logical errors while strictly keeping the student's "
    "wording, spacing, step granularity and notation.",
}


def _items(native: pd.DataFrame, pool: pd.DataFrame) -> list[OracleItem]:
    p = pool.set_index("problem_id")
    has_program = "program" in p.columns
    return [
        OracleItem(pid, p.at[pid, "problem"], ans, comp, p.at[pid, "program"] if has_program and pd.notna(p.at[pid, "program"]) else None)
        for pid, ans, comp in zip(native["problem_id"], native["answer"], native["completion"])
    ]


def _open_oracle(study: StudyResource, s: Study, family, verifier, stack):
    o = s.oracle
    if o.kind == "symbolic":
        style = family.student.style if family.student.kind == "synthetic" else None
        return SymbolicOracle(verifier, student_style=style, polish_share=o.polish_share)
    from qup_assets.backends.factory import load_tokenizer, open_backend
    from qup_assets.backends.hub import resolve_model
    from qup_assets.study import Family, HFStudent

    if o.backend.kind == "openai":
        from qup_assets.backends.openai_backend import OpenAIBackend

        b = o.backend
        lm = OpenAIBackend(b.base_url, b.model or o.model, api_key_env=b.api_key_env, api=b.api,
                           max_concurrency=b.max_concurrency, send_seed=b.per_request_seed)
        chat = None
    else:
        path = resolve_model(o.model)
        lm = open_backend(Family(student=HFStudent(kind="hf", model=str(path)), backend=o.backend), path, seed=s.sampling.seed)
        tok = load_tokenizer(path)
        chat = (lambda text: tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                     add_generation_prompt=True)) if tok.chat_template else None
    cache = stack.enter_context(ResponseCache(study.cache_dir, lm.fingerprint[:16]))
    return LLMOracle(lm, cache, verifier, o.model, temperature=o.temperature, max_tokens=o.max_tokens,
                     max_retries=o.max_retries, seed=s.sampling.seed, chat_format=chat)


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


def _variant_frame(family: str, native: pd.DataFrame, results: list[OracleResult], oracle: str,
                   judged: list | None = None) -> pd.DataFrame:
    comps = [r.completion if r.ok else None for r in results]
    return pd.DataFrame(
        {
            "model_family": family,
            "problem_id": native["problem_id"].values,
            "prompt": native["prompt"].values,
            "completion": comps,
            "correct": [r.ok for r in results],
            "oracle": oracle,
            "attempts": [r.attempts for r in results],
            "reason": [r.reason for r in results],
            "repaired_steps": [r.repaired_steps for r in results],
            "semantic_preservation": [semantic_preservation(n, c) if c else None for n, c in zip(native["completion"], comps)],
            "semantic_judge": judged if judged is not None else [None] * len(comps),
            "edit_distance": [normalized_edit_distance(n, c) if c else None for n, c in zip(native["completion"], comps)],
            "n_chars": [len(c) if c else None for c in comps],
        },
        columns=VARIANT_COLUMNS,
    )


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


def build_variant_asset(variant: str) -> dg.AssetsDefinition:
    task = ORACLE_TASKS.get(variant)

    @dg.asset(
        name=f"{variant}_traces",
        partitions_def=model_family,
        group_name=variant,
        code_version=f"2-{PROMPT_VERSIONS[task]}" if task else "2",
        kinds={"parquet"},
        **(ACCELERATOR if task else {}),
        description=DESCRIPTIONS[variant] + " One row per native trace (same problem ids); failures are kept with "
        "their reason. Columns include semantic_preservation and edit_distance against the native trace.",
    )
    def _asset(context: dg.AssetExecutionContext, study: StudyResource, native_traces: pd.DataFrame,
               problem_pool: pd.DataFrame) -> dg.Output[pd.DataFrame]:
        import contextlib

        s = study.load()
        name = context.partition_key
        fam = study.family(s, name)
        started = time.monotonic()
        items = _items(native_traces, problem_pool)
        cache_stats: dict = {}
        judged = None
        with contextlib.ExitStack() as stack:
            verifier = stack.enter_context(study.verifier(s))
            if task is None:
                refs = problem_pool.set_index("problem_id")["reference_solution"]
                texts = [refs.get(it.problem_id) for it in items]
                checks = verifier.verify_many([(it.answer, t or "") for it, t in zip(items, texts)])
                results = [OracleResult(t, True, "verified") if t and c.correct else
                           OracleResult(None, False, "no reference solution" if not t else f"reference does not verify: {c.reason}")
                           for t, c in zip(texts, checks)]
                oracle_name, prompt_text = "dataset", None
            else:
                try:
                    oracle = _open_oracle(study, s, fam, verifier, stack)
                except BackendError as e:
                    raise dg.Failure(description=f"oracle unavailable: {e}") from None
                context.log.info(f"{name}: {task} with {oracle.name} on {len(items)} native traces")
                try:
                    results = oracle.run(task, items)
                except BackendError as e:
                    raise dg.Failure(description=f"oracle unavailable during {task}: {e}") from None
                if s.oracle.semantic_judge and isinstance(oracle, LLMOracle):
                    judged = judge_preservation(oracle.lm, oracle.cache, list(native_traces["completion"]),
                                                [r.completion if r.ok else None for r in results],
                                                oracle.chat_format, progress=context.log.info)
                if isinstance(oracle, LLMOracle):
                    cache_stats = {"oracle_cache_hits": oracle.cache.hits, "oracle_generated": oracle.cache.misses}
                oracle_name = oracle.name
                prompt_text = prompt_template(task) if isinstance(oracle, LLMOracle) else None
        df = _variant_frame(name, native_traces, results, oracle_name, judged)
        context.add_output_metadata({**_metadata(df, native_traces, time.monotonic() - started, prompt_text), **cache_stats})
        return versioned(df)

    return _asset


variant_assets = [build_variant_asset(v) for v in VARIANTS]


@dg.asset(
    partitions_def=model_family,
    group_name="students",
    code_version="1",
    kinds={"parquet"},
    description="The problem set every variant of the family (native included) has a verified trace for; every "
    "score, training run, evaluation and report of the family uses exactly this set. Problems left out are "
    "kept with the variants that failed and why.",
)
def common_problems(context: dg.AssetExecutionContext, native_traces: pd.DataFrame,
                    oracle_refined_traces: pd.DataFrame, oracle_synthesized_traces: pd.DataFrame,
                    reference_traces: pd.DataFrame, style_aligned_traces: pd.DataFrame) -> dg.Output[pd.DataFrame]:
    variants = {"oracle_refined": oracle_refined_traces, "oracle_synthesized": oracle_synthesized_traces,
                "reference": reference_traces, "style_aligned": style_aligned_traces}
    ids = native_traces["problem_id"]
    failed: dict[str, list[str]] = {pid: [] for pid in ids}
    retried: dict[str, list[str]] = {pid: [] for pid in ids}
    for v, df in variants.items():
        for pid in df.loc[df["attempts"] > 1, "problem_id"]:
            retried.setdefault(pid, []).append(v)
        ok = dict(zip(df["problem_id"], df["correct"]))
        why = dict(zip(df["problem_id"], df["reason"]))
        for pid in ids:
            if not ok.get(pid, False):
                failed[pid].append(f"{v}: {why.get(pid, 'missing')}")
    out = pd.DataFrame({
        "model_family": context.partition_key,
        "problem_id": ids.values,
        "common": [not failed[p] for p in ids],
        "reason": ["; ".join(failed[p]) for p in ids],
        "retried_variants": [",".join(retried[p]) for p in ids],
    })
    retry_rates = {v: float((df["attempts"] > 1).mean()) for v, df in variants.items()}
    context.add_output_metadata({
        "dagster/row_count": int(out["common"].sum()),
        "native_traces": len(ids),
        "common_fraction": dg.MetadataValue.float(float(out["common"].mean()) if len(out) else 0.0),
        "retry_rate_by_variant": md_table(pd.DataFrame({"variant": list(retry_rates), "retried": list(retry_rates.values())})),
        "left_out": md_table(out.loc[~out["common"], ["problem_id", "reason"]], max_rows=10, width=200),
    })
    return versioned(out)


@dg.asset_check(asset=common_problems, description="Reports the share of problems whose rewrites were retried or "
                "dropped; fails when the common set is below study.min_common_fraction of native_traces.")
def common_problems_large_enough(study: StudyResource, common_problems: pd.DataFrame) -> dg.AssetCheckResult:
    frac = float(common_problems["common"].mean()) if len(common_problems) else 0.0
    need = study.load().min_common_fraction
    dropped = common_problems.loc[~common_problems["common"], "reason"]
    return dg.AssetCheckResult(
        passed=frac >= need,
        metadata={"common_fraction": frac, "required": need, "dropped": int(len(dropped)),
                  "dropped_share": float(len(dropped) / max(1, len(common_problems))),
                  "retried_share": float((common_problems["retried_variants"] != "").mean()) if len(common_problems) else 0.0,
                  "dropped_by_variant": ", ".join(sorted({r.split(":")[0] for rr in dropped for r in rr.split("; ")})) or "none"},
    )
