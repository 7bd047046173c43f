"""The study's health: is a number the report rests on doubtful? Plain Python behind the Dagster asset checks
(assets/health.py), each a `Health`: passed, what a researcher reads when it did not, and the numbers behind it.

- do the reward models tell the family's right samples from its wrong ones (rm_diagnostics)?
- how many verified-correct native traces (SLM-RFT's training data) reached the answer through a wrong step?
- are two variants mostly the very same text (then their accuracy gap can only be small)?
- are the paired 95% intervals of the main comparisons narrow enough to decide them?

A threshold crossed makes the result doubtful (severity WARN); data that contradicts itself is wrong (ERROR).
What cannot be measured (no such variant in this study, no rows yet) passes with a note saying why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from qup_assets import variants
from qup_assets.report.texts import identical_shares, wrong_step_shares
from qup_assets.reward.diagnostics import WEAK_SEPARATION

WRONG_STEP_LIMIT = 0.20  # share of verified-correct native traces with a wrong step
IDENTICAL_LIMIT = 0.10  # share of common problems on which two variants are byte-identical
HALF_WIDTH_LIMIT = 2.5  # accuracy points: median half-width of the main comparisons' paired 95% intervals
# The report's main comparisons (variant, versus): does RFT lift the student, and Style-Aligned against the two
# variants it is the alternative to.
MAIN_COMPARISONS = (("native", "base"), ("style_aligned", "oracle_refined"), ("style_aligned", "native"))


@dataclass
class Health:
    passed: bool
    summary: str  # one line per finding when it did not pass, else one line of what was measured
    table: pd.DataFrame = field(default_factory=pd.DataFrame)  # the numbers behind it
    values: dict = field(default_factory=dict)  # scalar metadata (str, int, float)
    notes: list[str] = field(default_factory=list)  # what was left out or could not be measured, and why
    severity: str = "WARN"  # of a failure: "WARN" (doubtful) or "ERROR" (wrong)


def _families(df: pd.DataFrame, families) -> tuple[pd.DataFrame, list[str]]:
    """The rows of `families` (None: all) and the other families present, named in a note."""
    if families is None or "model_family" not in df:
        return df, []
    keep = df["model_family"].isin(list(families))
    return df[keep], sorted(set(df.loc[~keep, "model_family"].astype(str)))


def _excluded_note(other: list[str]) -> list[str]:
    return [f"families not in the study file left out (their data is kept): {', '.join(other)}"] if other else []


def _pct(x: float) -> str:
    return "n/a" if pd.isna(x) else f"{100 * x:.1f}%"


# ---------------------------------------------------------------- reward models


def rm_separation(diagnostics: pd.DataFrame, families=None) -> Health:
    """Each RM's P(correct > wrong) on each family's own native samples (rm_diagnostics' rows): below
    WEAK_SEPARATION, or not measurable (no wrong or no correct sample), its rewards say little about correctness."""
    df, other = _families(diagnostics, families)
    notes = _excluded_note(other)
    if df.empty:
        return Health(True, "no rm_diagnostics rows for the study's families yet: nothing to judge",
                      notes=notes + ["rm_diagnostics has no rows for the study's families"])
    p = df["p_correct_over_wrong"].astype(float)
    state = np.where(p.isna(), "not measurable", np.where(p < WEAK_SEPARATION, "weak", "separates"))
    table = pd.DataFrame({
        "family": df["model_family"].astype(str).to_numpy(), "reward model": df["reward_model"].astype(str).to_numpy(),
        "P(correct > wrong)": p.round(3).to_numpy(),
        "95% CI": [f"[{lo:.3f}, {hi:.3f}]" for lo, hi in zip(df["ci_low"], df["ci_high"])],
        "correct / wrong samples": [f"{c} / {w}" for c, w in zip(df["n_correct"], df["n_wrong"])],
        "state": state})
    lines = []
    for r, st in zip(df.itertuples(index=False), state):
        if st == "weak":
            worse = " (its interval lies below 0.5: it prefers the wrong samples)" if r.ci_high < 0.5 else ""
            lines.append(f"{r.model_family}: {r.reward_model} cannot tell the family's correct samples from its wrong "
                         f"ones: P(correct > wrong) = {r.p_correct_over_wrong:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}] "
                         f"< {WEAK_SEPARATION}{worse}; its rewards say little about correctness.")
        elif st == "not measurable":
            lines.append(f"{r.model_family}: {r.reward_model}'s separation is not measurable ({r.n_correct} correct "
                         f"and {r.n_wrong} wrong native samples): its rewards are unchecked.")
    values = {f"{r.model_family}/{r.reward_model}": (f"{r.p_correct_over_wrong:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]"
                                                     if not pd.isna(r.p_correct_over_wrong) else "not measurable")
              for r in df.itertuples(index=False)}
    values.update({"threshold": WEAK_SEPARATION, "reward_models_below": int((state != "separates").sum()),
                   **({"lowest_p": float(p.min())} if p.notna().any() else {})})
    ok = f"every reward model separates right from wrong (P >= {WEAK_SEPARATION}) on every family"
    return Health(not lines, "\n".join(lines) or ok, table, values, notes)


# ---------------------------------------------------------------- wrong steps behind right answers


def wrong_steps(traces: dict[str, pd.DataFrame], families=None) -> Health:
    """WARN when more than WRONG_STEP_LIMIT of a family's verified-correct native traces contain a wrong step."""
    if "native" not in traces or "style_aligned" not in traces:
        return Health(True, "not measured: this study has no style_aligned traces",
                      notes=["wrong steps are read from Style-Aligned rewrites (repaired_steps > 0); this study has "
                             "no style_aligned variant, so the check has nothing to measure"])
    if any(traces[v].empty or "model_family" not in traces[v] for v in ("native", "style_aligned")):
        return Health(True, "no native or Style-Aligned traces stored yet: nothing to judge",
                      notes=["native_traces or style_aligned_traces has no rows"])
    native, other = _families(traces["native"], families)
    aligned, _ = _families(traces["style_aligned"], families)
    notes = _excluded_note(other)
    shares = wrong_step_shares(native, aligned)
    if shares.empty:
        return Health(True, "no native traces for the study's families yet: nothing to judge",
                      notes=notes + ["no verified-correct native traces"])
    lines = []
    for r in shares.itertuples(index=False):
        if not r.measured:
            notes.append(f"{r.model_family}: not measurable (no native trace has a verified Style-Aligned rewrite)")
        elif r.share > WRONG_STEP_LIMIT:
            lines.append(f"{r.model_family}: {_pct(r.share)} of the verified-correct native traces (SLM-RFT's "
                         f"training data) reach their right answer through a wrong step ({r.wrong} of {r.measured} "
                         f"Style-Aligned rewrites repaired a step), above {_pct(WRONG_STEP_LIMIT)}: SLM-RFT trains on "
                         "wrong reasoning that the answer-only verifier let through.")
    table = shares.drop(columns="by").assign(share=[_pct(s) for s in shares["share"]]).rename(columns={
        "model_family": "family", "native": "verified native traces", "measured": "with a verified rewrite",
        "wrong": "with a wrong step", "share": "share", "left_out": "left out"})
    values = {"threshold": WRONG_STEP_LIMIT, **{f"{r.model_family}/wrong_step_share": float(r.share)
                                               for r in shares.itertuples(index=False) if r.measured}}
    ok = f"at most {_pct(WRONG_STEP_LIMIT)} of each family's verified-correct native traces contain a wrong step"
    return Health(not lines, "\n".join(lines) or ok, table, values, notes)


# ---------------------------------------------------------------- identical texts


def same_by_design(a: str, b: str) -> bool:
    """Pairs whose texts coincide by definition: Style-Aligned is the native trace with its wrong steps repaired
    (a right trace comes back as it was), and a selected variant copies one of its candidates."""
    by = {v.name: v for v in variants.REGISTRY}
    return {a, b} == {"native", "style_aligned"} or any(by[v].source == "selected" for v in (a, b) if v in by)


def identical_texts(traces: dict[str, pd.DataFrame], families=None) -> Health:
    """WARN when two variants' completions are byte-identical on more than IDENTICAL_LIMIT of the problems both
    have a text for, in some family: they train the student on nearly the same data (pairs the same by design,
    `same_by_design`, are shown but never warn)."""
    kept, other, empty = {}, [], []
    for v, df in traces.items():
        if df.empty or "completion" not in df:
            empty.append(v)
            continue
        kept[v], o = _families(df, families)
        other += o
    notes = _excluded_note(sorted(set(other)))
    if empty:
        notes.append(f"no traces stored for {', '.join(empty)}: left out of the pairs")
    if len(kept) < 2:
        return Health(True, "not measured: fewer than two variants", notes=notes + [
            f"variants with traces: {', '.join(kept) or 'none'}; identical texts need a pair"])
    shares = identical_shares(kept)
    if shares.empty:
        return Health(True, "no problem has texts of two variants yet: nothing to judge",
                      notes=notes + ["no pair of variants shares a problem"])
    by_design = pd.Series([same_by_design(a, b) for a, b in zip(shares["variant"], shares["versus"])],
                          index=shares.index)
    high = shares[(shares["share"] > IDENTICAL_LIMIT) & ~by_design]
    lines = [f"{r.model_family}: {variants.label(r.variant)} and {variants.label(r.versus)} are the very same text on "
             f"{_pct(r.share)} of the problems both have ({r.identical} of {r.common})."
             for r in high.itertuples(index=False)]
    if lines:
        lines.append(f"Above {_pct(IDENTICAL_LIMIT)}, two variants train the student on nearly the same data: their "
                     "accuracy gap can only be small.")
    table = pd.DataFrame({"family": shares["model_family"],
                          "pair": [f"{variants.label(a)} / {variants.label(b)}"
                                   for a, b in zip(shares["variant"], shares["versus"])],
                          "problems compared": shares["common"], "identical": shares["identical"],
                          "share": [_pct(s) for s in shares["share"]]})
    notes.append("not judged, the same by design: SLM-RFT / Style-Aligned (a right trace needs no repair) and any "
                 "pair with a selected variant (it copies a candidate)")
    values = {"threshold": IDENTICAL_LIMIT, "highest_share": float(shares["share"].max()),
              "pairs_above": int(len(high)), "pairs": int(len(shares))}
    ok = f"no two variants share more than {_pct(IDENTICAL_LIMIT)} identical texts in any family"
    return Health(not lines, "\n".join(lines) or ok, table, values, notes)


# ---------------------------------------------------------------- paired intervals


def read_differences(path) -> pd.DataFrame | None:
    """The report's differences.csv (None when the file is missing; no rows when it has none)."""
    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        return None
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=["model_family", "objective", "variant", "versus", "difference", "ci_low",
                                     "ci_high"])


def comparison_label(variant: str, versus: str) -> str:
    return f"{variants.label(variant)} vs {variants.label(versus)}"


def interval_widths(differences: pd.DataFrame | None, families=None) -> Health:
    """The half-widths (accuracy points) of the paired 95% intervals of the report's main comparisons
    (MAIN_COMPARISONS, every family and objective): WARN when their median exceeds HALF_WIDTH_LIMIT, since then
    a gap of the paper's size (a few points) could not be told from none. A missing file is an ERROR."""
    if differences is None:
        return Health(False, "the report's paired differences (differences.csv) are missing from its folder: "
                      "re-materialize paradox_report", severity="ERROR")
    df, other = _families(differences, families)
    notes = _excluded_note(other)
    main = pd.DataFrame(MAIN_COMPARISONS, columns=["variant", "versus"])
    rows = df.merge(main.reset_index(), on=["variant", "versus"]).sort_values(["index", "model_family", "objective"],
                                                                                kind="stable")
    absent = [comparison_label(a, b) for a, b in MAIN_COMPARISONS
              if not ((df["variant"] == a) & (df["versus"] == b)).any()] if len(df) else []
    if absent:
        notes.append(f"not in this study's report: {', '.join(absent)}")
    if rows.empty:
        return Health(True, "no main comparison in the report: nothing to judge",
                      notes=notes + ["the report has none of the main comparisons (SLM-RFT vs base, Style-Aligned "
                                     "vs Oracle-Refined and vs SLM-RFT)"])
    half = 100 * (rows["ci_high"] - rows["ci_low"]) / 2
    table = pd.DataFrame({
        "comparison": [comparison_label(a, b) for a, b in zip(rows["variant"], rows["versus"])],
        "family": rows["model_family"].to_numpy(), "objective": rows["objective"].str.upper().to_numpy(),
        "difference (points)": (100 * rows["difference"]).round(1).to_numpy(),
        "95% CI (points)": [f"[{100 * lo:+.1f}, {100 * hi:+.1f}]" for lo, hi in zip(rows["ci_low"], rows["ci_high"])],
        "half-width (points)": half.round(2).to_numpy()})
    median = float(np.median(half))
    values = {"median_half_width_points": round(median, 2), "threshold_points": HALF_WIDTH_LIMIT,
              "widest_half_width_points": round(float(half.max()), 2), "intervals": int(len(rows))}
    if median > HALF_WIDTH_LIMIT:
        summary = (f"the paired 95% intervals of the main comparisons are too wide to decide them: median half-width "
                   f"{median:.1f} points > {HALF_WIDTH_LIMIT} (widest {half.max():.1f}, over {len(rows)} intervals); "
                   "more benchmark items (or more samples per item, evaluation.k) narrow them.")
        return Health(False, summary, table, values, notes)
    return Health(True, f"the main comparisons' paired 95% intervals have a median half-width of {median:.1f} points "
                  f"(at most {HALF_WIDTH_LIMIT})", table, values, notes)
