"""The study's health as asset checks, non-blocking: a result that is doubtful fails with severity WARN, one
that is wrong with ERROR; nothing downstream stops. The numbers and thresholds are report/health.py's.

Like the other checks they are unpartitioned: on a family asset they read every materialized family (judged
one by one, families no longer in the study file left out). They run with the asset they check, in the UI and in
`qup run`, which prints each check that did not pass with its description.
"""

import dagster as dg
import pandas as pd

from qup_assets.assets.metadata import md_table
from qup_assets.assets.resources import StudyResource
from qup_assets.report.health import (
    HALF_WIDTH_LIMIT,
    IDENTICAL_LIMIT,
    WEAK_SEPARATION,
    WRONG_STEP_LIMIT,
    Health,
    identical_texts,
    interval_widths,
    read_differences,
    rm_separation,
    wrong_steps,
)
from qup_assets.storage.tables import read_table, report_dir, table_path
from qup_assets.variants import names

RM_CHECK = "reward_models_tell_right_from_wrong"
WRONG_STEPS_CHECK = "few_wrong_steps_behind_right_answers"
IDENTICAL_CHECK = "variants_differ_in_text"
INTERVALS_CHECK = "main_comparisons_decidable"


def check_result(h: Health) -> dg.AssetCheckResult:
    """A Health as Dagster's check result: its summary as description, the numbers as a markdown table."""
    return dg.AssetCheckResult(
        passed=h.passed, severity=dg.AssetCheckSeverity[h.severity], description=h.summary,
        metadata={**h.values, "numbers": md_table(h.table, max_rows=60, width=120),
                  "notes": dg.MetadataValue.md("\n".join(f"- {n}" for n in h.notes) or "none")})


def _families(study: StudyResource) -> list[str]:
    return list(study.load().families)


def _stored(study: StudyResource, asset: str, families: list[str]) -> pd.DataFrame:
    """The families' partitions of a table asset that are in the store. A check reads the tables of assets upstream
    of the one it checks from the store, not through `additional_ins`/`additional_deps`: the study's key prefix
    (load_asset_checks_from_modules) rewrites a check's own asset and inputs but not its specs' additional deps
    (dagster 1.13), so those would name unprefixed keys that no study has."""
    return read_table(study.store, asset, [f for f in families if table_path(study.store, asset, f).is_file()])


def build_health_checks() -> list[dg.AssetChecksDefinition]:
    """The four health checks over the registry's variants (read at call time, as study_graph is)."""
    variants = names()

    @dg.asset_check(asset="rm_diagnostics", name=RM_CHECK, description=(
        "Can each reward model tell this family's correct native samples from its wrong ones? Warns when an RM's "
        f"P(correct outscores wrong) is below {WEAK_SEPARATION} (or cannot be measured) on some family: its "
        "rewards, the study's 'perceived quality', then say little about correctness. Metadata: each RM's value "
        "and 95% CI per family."))
    def rm_check(study: StudyResource, rm_diagnostics: pd.DataFrame) -> dg.AssetCheckResult:
        return check_result(rm_separation(rm_diagnostics, _families(study)))

    wrong_description = (
        "How many verified-correct native traces (SLM-RFT's training data) reach their right answer through a "
        "wrong step? Read from Style-Aligned, the native trace with its wrong steps repaired by the Oracle "
        f"(repaired_steps > 0). Warns above {100 * WRONG_STEP_LIMIT:.0f}% in some family: the answer-only verifier "
        "let that much wrong reasoning into SLM-RFT's data.")
    if "style_aligned" in variants:
        @dg.asset_check(asset="style_aligned_traces", name=WRONG_STEPS_CHECK, description=wrong_description)
        def wrong_check(study: StudyResource, style_aligned_traces: pd.DataFrame) -> dg.AssetCheckResult:
            families = sorted(set(style_aligned_traces["model_family"]))
            native = _stored(study, "native_traces", families)
            return check_result(wrong_steps({"native": native, "style_aligned": style_aligned_traces},
                                            _families(study)))
    else:  # a registry without Style-Aligned: the check exists, passes and says why it measured nothing
        @dg.asset_check(asset="native_traces", name=WRONG_STEPS_CHECK, description=wrong_description)
        def wrong_check() -> dg.AssetCheckResult:
            return check_result(wrong_steps({}))

    traces = {v: f"{v}_traces" for v in variants}

    @dg.asset_check(asset="paradox_report", name=IDENTICAL_CHECK, description=(
        "Are two variants the very same text? Per family and pair of variants, the share of the problems both have "
        f"a trace for on which the completions are byte-identical; warns above {100 * IDENTICAL_LIMIT:.0f}% for "
        "some pair: the two train the student on nearly the same data, so their accuracy gap can only be small. "
        "The report's families only."))
    def identical_check(study: StudyResource, paradox_report: dict) -> dg.AssetCheckResult:
        families = list(paradox_report.get("families") or [])
        return check_result(identical_texts({v: _stored(study, name, families) for v, name in traces.items()},
                                            families))

    @dg.asset_check(asset="paradox_report", name=INTERVALS_CHECK, description=(
        "Are the report's main comparisons (SLM-RFT vs the base model, Style-Aligned vs Oracle-Refined and vs "
        "SLM-RFT) decided? Warns when the median half-width of their paired 95% bootstrap intervals (every family "
        f"and objective) exceeds {HALF_WIDTH_LIMIT} accuracy points: a gap of the paper's size could not be told "
        "from none. An ERROR when the report's differences.csv is missing. Metadata: every interval."))
    def intervals_check(study: StudyResource, paradox_report: dict) -> dg.AssetCheckResult:
        diffs = read_differences(report_dir(study.store) / "differences.csv")
        return check_result(interval_widths(diffs, paradox_report.get("families")))

    return [rm_check, wrong_check, identical_check, intervals_check]
