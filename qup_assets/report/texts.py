"""What the variants' texts are, beyond their scores: how often two variants are the very same text, and how
often a verified-correct native trace reached its right answer through a wrong step.

Two variants whose completions are mostly byte-identical train the student on nearly the same data, so their
gap in accuracy can only be small; and a native trace with a wrong step is what SLM-RFT trains on when the
verifier checks answers only.
"""

from __future__ import annotations

from itertools import combinations

import pandas as pd

from qup_assets import variants

SHARE_COLUMNS = ["model_family", "variant", "versus", "common", "identical", "share"]


def _texts(df: pd.DataFrame) -> pd.Series:
    """A variant's completions by (family, problem): one per problem, failures (no text) left out."""
    df = df.dropna(subset=["completion"]).drop_duplicates(["model_family", "problem_id"])
    return df.set_index(["model_family", "problem_id"])["completion"]


def identical_shares(traces: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per family and pair of variants (in `traces`' order), the share of the problems both have a text for on
    which the two completions are byte-identical (SHARE_COLUMNS; `common`: how many problems were compared)."""
    texts = {v: _texts(df) for v, df in traces.items()}
    rows = []
    for a, b in combinations(texts, 2):
        both = pd.concat([texts[a], texts[b]], axis=1, join="inner", keys=["a", "b"])
        for fam, g in both.groupby(level="model_family", sort=True):
            same = int((g["a"] == g["b"]).sum())
            rows.append([fam, a, b, len(g), same, same / len(g)])
    return pd.DataFrame(rows, columns=SHARE_COLUMNS).sort_values("model_family", kind="stable").reset_index(drop=True)


def identical_display(shares: pd.DataFrame) -> pd.DataFrame:
    """One row per pair of variants, one column per family: "<percent> of <problems compared>"."""
    cell = [f"{100 * s:.1f}% of {n}" for s, n in zip(shares["share"], shares["common"])]
    pair = [f"{variants.label(a)} / {variants.label(b)}" for a, b in zip(shares["variant"], shares["versus"])]
    wide = shares.assign(pair=pair, cell=cell).pivot(index="pair", columns="model_family", values="cell")
    return wide.reindex(list(dict.fromkeys(pair))).reset_index().rename_axis(columns=None)


WRONG_STEP_COLUMNS = ["model_family", "native", "measured", "wrong", "share", "left_out", "by"]


def wrong_step_shares(native: pd.DataFrame, aligned: pd.DataFrame) -> pd.DataFrame:
    """Per family, how many verified-correct native traces (SLM-RFT's training data) contain a wrong step, read
    from Style-Aligned: the native trace with its wrong steps repaired by the Oracle, so repaired_steps > 0 says
    the native trace had one. Columns: the verified-correct native traces (`native`), those with a verified
    Style-Aligned rewrite (`measured`, matched by family and problem id), how many of these were repaired
    (`wrong`), their `share` (NaN when none was measured), the traces without a verified rewrite (`left_out`)
    and the Oracle(s) that repaired them (`by`)."""
    if "correct" in native:
        native = native[native["correct"].astype(bool)]
    native = native.drop_duplicates(["model_family", "problem_id"])
    aligned = aligned[aligned["correct"].astype(bool)].drop_duplicates(["model_family", "problem_id"])
    rows = []
    for fam, n in native.groupby("model_family", sort=True):
        m = n[["model_family", "problem_id"]].merge(aligned, on=["model_family", "problem_id"])
        wrong = int((m["repaired_steps"] > 0).sum())
        by = ", ".join(sorted(m["oracle"].astype(str).unique())) if "oracle" in m and len(m) else "the Oracle"
        rows.append([fam, len(n), len(m), wrong, wrong / len(m) if len(m) else float("nan"), len(n) - len(m), by])
    return pd.DataFrame(rows, columns=WRONG_STEP_COLUMNS)


def wrong_step_lines(traces: dict[str, pd.DataFrame]) -> list[str]:
    """One line per family: the share of verified-correct native traces with a wrong step (wrong_step_shares)."""
    if "native" not in traces or "style_aligned" not in traces:
        return ["Wrong steps behind right answers: cannot be computed (this study has no style_aligned traces)."]
    lines = []
    for r in wrong_step_shares(traces["native"], traces["style_aligned"]).itertuples(index=False):
        if not r.measured:
            lines.append(f"- {r.model_family}: cannot be computed (no native trace has a verified Style-Aligned rewrite).")
            continue
        left = f"; {r.left_out} without a verified rewrite left out" if r.left_out else ""
        lines.append(f"- {r.model_family}: {100 * r.share:.1f}% of the verified-correct native traces (SLM-RFT's "
                     f"training data) contain a wrong step ({r.wrong} of {r.measured}: the Style-Aligned rewrites in "
                     f"which {r.by} repaired at least one step{left}).")
    return lines
