"""`problem_pool` and `benchmarks`: the problems every family is sampled, trained and evaluated on."""


import dagster as dg
import pandas as pd

from qup_assets.assets.metadata import counts_table, md_table, versioned
from qup_assets.assets.resources import StudyResource
from qup_assets.mathcore.extract import CHECKER_VERSION
from qup_assets.problems.sources import ProblemSet, ProblemSourceError, changed_golds, load_benchmarks, load_problems
from qup_assets.storage.tables import read_table


def _previous(study: StudyResource, name: str) -> pd.DataFrame | None:
    """The table this asset wrote last time, to count what a new run changes."""
    try:
        return read_table(study.store, name)
    except FileNotFoundError:
        return None


def _log_changed_golds(context: dg.AssetExecutionContext, changed: int, of: int) -> None:
    context.log.info(f"{changed} of {of} gold answers differ from the last materialization "
                     f"(answer checker v{CHECKER_VERSION})")


def _set_metadata(ps: ProblemSet) -> dict:
    meta = {
        "dagster/row_count": len(ps.rows),
        "source": ps.label,
        "raw_rows": ps.n_raw,
        "rejected": len(ps.rejected),
        "duplicates_removed": ps.n_duplicates,
        "rejected_by_reason": counts_table(ps.reject_counts()),
    }
    if ps.notes:
        meta["notes"] = "; ".join(ps.notes)
    if not ps.rejected.empty:
        meta["rejected_sample"] = md_table(ps.rejected, max_rows=10)
    return meta


@dg.asset(
    group_name="problems",
    code_version="1",
    kinds={"parquet"},
    description=(
        "The problem pool every family samples from (NuminaMath-CoT in the paper; the synthetic world by default). "
        "Columns: problem_id, problem, answer, reference_solution, program, n_steps, source. Bad rows are rejected "
        "with a reason, duplicates removed, every gold parsed on its own (code-like or unparsable golds are "
        "rejected); golds_changed counts the golds a new answer checker re-derived differently."
    ),
)
def problem_pool(context: dg.AssetExecutionContext, study: StudyResource) -> dg.Output[pd.DataFrame]:
    s = study.load()
    try:
        with study.verifier(s) as verifier:
            ps = load_problems(s.problems, verifier, s)
    except ProblemSourceError as e:
        raise dg.Failure(description=str(e)) from None
    context.log.info(f"problem_pool: {len(ps.rows)} problems from {ps.label} ({len(ps.rejected)} rejected)")
    changed = changed_golds(_previous(study, "problem_pool"), ps.rows)
    _log_changed_golds(context, changed, len(ps.rows))
    meta = _set_metadata(ps)
    meta["golds_changed"] = changed
    meta["sample"] = md_table(ps.rows[["problem_id", "problem", "answer"]], max_rows=5)
    if ps.rows["n_steps"].notna().any():
        meta["steps_distribution"] = counts_table(
            ps.rows["n_steps"].value_counts().sort_index().to_dict(), key="n_steps", value="problems"
        )
    context.add_output_metadata(meta)
    return versioned(ps.rows)


@dg.asset(
    group_name="problems",
    code_version="1",
    kinds={"parquet"},
    description=(
        "Evaluation benchmarks, one named set per study entry (MATH-500, AIME24, ... in the paper). Same cleaning "
        "as the pool, then decontaminated: items whose problem is also in problem_pool are dropped and counted."
    ),
)
def benchmarks(context: dg.AssetExecutionContext, study: StudyResource, problem_pool: pd.DataFrame) -> dg.Output[pd.DataFrame]:
    s = study.load()
    try:
        with study.verifier(s) as verifier:
            sets = load_benchmarks(s, verifier, set(problem_pool["problem_id"]))
    except ProblemSourceError as e:
        raise dg.Failure(description=str(e)) from None
    rows = pd.concat([ps.rows for ps in sets.values()], ignore_index=True)
    summary = pd.DataFrame(
        [
            {"benchmark": name, "problems": len(ps.rows), "rejected": len(ps.rejected),
             "duplicates": ps.n_duplicates, "source": ps.label}
            for name, ps in sets.items()
        ]
    )
    contaminated = sum(int(ps.rejected["reason"].str.startswith("in_problem_pool").sum()) for ps in sets.values())
    context.log.info(f"benchmarks: {len(rows)} items in {len(sets)} sets ({contaminated} contaminated items dropped)")
    changed = changed_golds(_previous(study, "benchmarks"), rows, keys=("benchmark", "problem_id"))
    _log_changed_golds(context, changed, len(rows))
    context.add_output_metadata(
        {
            "dagster/row_count": len(rows),
            "golds_changed": changed,
            "benchmarks": md_table(summary, max_rows=50),
            "contaminated_dropped": contaminated,
            "rejected_by_reason": counts_table(
                pd.concat([ps.rejected for ps in sets.values()])["reason"].str.split(":").str[0].value_counts().to_dict()
            ),
            "sample": md_table(rows[["benchmark", "problem_id", "problem", "answer"]], max_rows=5),
        }
    )
    return versioned(rows)


@dg.asset_check(asset=problem_pool, description="Every problem id is unique and every gold answer is non-empty.")
def problem_pool_ids_unique(problem_pool: pd.DataFrame) -> dg.AssetCheckResult:
    dupes = int(problem_pool["problem_id"].duplicated().sum())
    empty = int((problem_pool["answer"].fillna("").str.strip() == "").sum())
    return dg.AssetCheckResult(passed=dupes == 0 and empty == 0, metadata={"duplicate_ids": dupes, "empty_answers": empty})
