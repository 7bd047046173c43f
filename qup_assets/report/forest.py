"""The report's paired comparisons as forest plots: one per question, each difference with its 95% interval.

Forty sentences, nearly all "not distinguishable", hide the few comparisons that decide; a forest plot shows
every one at a glance (which side of zero, how wide), and the report keeps the sentences only for those whose
interval excludes zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pandas as pd

from qup_assets import variants
from qup_assets.report.plotting import OBJ_MARKERS, png

# Phrases of the generated sentences (analysis.gap_sentence, analysis.rft_sentences) whose interval includes zero.
UNDECIDED = ("is not distinguishable from", "does not measurably change")


@dataclass(frozen=True)
class Question:
    plot: str  # the PNG's name
    title: str
    rows: Callable[[pd.DataFrame], pd.Series]  # which rows of the paired differences answer it


def _selected(d: pd.DataFrame) -> pd.Series:
    return d["variant"].isin([v.name for v in variants.sources("selected")])


QUESTIONS = {
    "gaps": Question("forest_style_aligned", "Style-Aligned minus Oracle-Refined and SLM-RFT",
                     lambda d: (d["variant"] == "style_aligned") & d["versus"].isin(["oracle_refined", "native"])),
    "selection": Question("forest_selection", "the learner's choice (Compat-Selected) minus each other variant",
                          _selected),
    "rft": Question("forest_rft", "SLM-RFT minus the base model (does fine-tuning on its own traces help?)",
                    lambda d: (d["variant"] == "native") & (d["versus"] == "base")),
}


def decided(lines: list[str]) -> list[str]:
    """The generated sentences whose interval excludes zero."""
    return [line for line in lines if not any(u in line for u in UNDECIDED)]


def summary(lines: list[str], plot_shown: bool) -> str:
    """One line for the comparisons a forest plot holds and the sentences leave out."""
    left = len(lines) - len(decided(lines))
    if not left:
        return ""
    where = "the plot above and differences.csv" if plot_shown else "differences.csv"
    return f"The other {left} of {len(lines)} comparisons have intervals that include zero (each in {where})."


def comparison_rows(diffs: pd.DataFrame, question: str) -> pd.DataFrame:
    if diffs.empty:
        return diffs
    return diffs[QUESTIONS[question].rows(diffs)]


def forest_plot(diffs: pd.DataFrame, question: str) -> bytes | None:
    """One row per (family, objective, versus): the difference in points with its 95% interval; filled where the
    interval excludes zero (blue above, red below), hollow where it does not."""
    d = comparison_rows(diffs, question)
    if d.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = variants.names() + ["base"]
    d = d.assign(_v=d["versus"].map(lambda v: order.index(v) if v in order else len(order)))
    d = d.sort_values(["model_family", "_v", "variant", "objective"]).reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7.6, 0.9 + 0.24 * len(d)))
    labels = []
    for i, r in d.iterrows():
        y = len(d) - 1 - i
        lo, mid, hi = 100 * r["ci_low"], 100 * r["difference"], 100 * r["ci_high"]
        color = "tab:blue" if lo > 0 else "tab:red" if hi < 0 else "gray"
        ax.plot([lo, hi], [y, y], color=color, lw=1.6)
        ax.plot(mid, y, OBJ_MARKERS.get(r["objective"], "o"), color=color, ms=5.5,
                mfc=color if color != "gray" else "white")
        versus = "base model" if r["versus"] == "base" else variants.label(r["versus"])
        who = f"{variants.label(r['variant'])} " if d["variant"].nunique() > 1 else ""
        labels.append((y, f"{r['model_family']} {r['objective'].upper()}: {who}vs {versus}"))
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks([y for y, _ in labels], [t for _, t in labels], fontsize=7)
    ax.set_ylim(-0.7, len(d) - 0.3)
    ax.set_xlabel("macro Avg@k difference (points; 95% paired bootstrap CI)", fontsize=8)
    ax.set_title(QUESTIONS[question].title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    return png(fig)


def comparison(rep, question: str, lines: list[str], image_src) -> list[str]:
    """A question's Markdown: its forest plot (when drawn), then the sentences of the comparisons that decide and
    how many do not. `rep` is a render.Report, `image_src(name)` a plot's link."""
    if not lines:
        return []
    plot = QUESTIONS[question].plot
    shown = plot in rep.plots
    return [f"![{QUESTIONS[question].title}]({image_src(plot)})" if shown else "",
            "\n".join(decided(lines)), summary(lines, shown)]
