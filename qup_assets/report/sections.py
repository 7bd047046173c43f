"""The report's sections beyond the paper: the verdict under each reward model, the paradox by size and by
difficulty, the variants' texts (identical shares, wrong steps behind right answers), and the exemplars where
reward and perplexity disagree (their Markdown, the size plot, the highlighted side-by-side HTML, the CSVs).

Model text reaches the HTML here without markdown-it in between, so every piece of it goes through
html.escape: a trace that writes `<script>` shows it as text.
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from qup_assets import variants
from qup_assets.common import format_params
from qup_assets.markdown import markdown_table
from qup_assets.report.breakdown import size_pairs
from qup_assets.report.exemplars import readable
from qup_assets.report.plotting import OBJ_MARKERS, png
from qup_assets.report.texts import identical_display

HIGHLIGHT_TOKENS = 8  # per trace, the tokens with the largest loss are marked


def _md(df: pd.DataFrame) -> str:
    return markdown_table(df, max_rows=None, width=None, na="-")


def size_plot(rep) -> bytes | None:
    """One figure, one panel per size pair: the gap (points, 95% CI) per family against its parameter count,
    one line per lineage and objective."""
    t = rep.size_gaps
    if t.empty or t["parameters"].isna().all():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = [p for p in size_pairs() if ((t["variant"] == p[0]) & (t["versus"] == p[1])).any()]
    fig, axes = plt.subplots(1, len(pairs), figsize=(3.2 * len(pairs), 3.4), squeeze=False, sharey=True)
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    lineages = sorted(t["lineage"].unique())
    for ax, (a, b) in zip(axes[0], pairs):
        g = t[(t["variant"] == a) & (t["versus"] == b)]
        for (lin, o), h in g.groupby(["lineage", "objective"], sort=True):
            h = h.sort_values("parameters")
            y = 100 * h["difference"]
            err = [100 * (h["difference"] - h["ci_low"]), 100 * (h["ci_high"] - h["difference"])]
            ax.errorbar(h["parameters"], y, yerr=err, fmt=OBJ_MARKERS.get(o, "o") + ("-" if o == "sft" else "--"),
                        capsize=2, ms=5,
                        color=cycle[lineages.index(lin) % len(cycle)], alpha=0.85, label=f"{lin} {o.upper()}")
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.set_title(f"{variants.label(a)}\nminus {variants.label(b)}", fontsize=8)
    axes[0][0].set_ylabel("macro Avg@k difference (points)")
    axes[0][0].legend(fontsize=6)
    return png(fig)


def verdict_by_rm_markdown(rep) -> list[str]:
    """Below the verdict: whether it is the same under every reward model, and each RM's own state."""
    if not rep.rm_lines:
        return []
    head = rep.rm_verdicts.iloc[0]
    where = "pooled over families" if head["scope"] == "pooled" else head["scope"]
    return [f"**Under each reward model alone** (its raw scores; {where}, "
            f"{'SFT and DFT' if head['objective'] == 'all' else head['objective'].upper()}; the same bootstrap "
            "draws and rho(PPL, accuracy) as above):", rep.rm_lines[0], "\n".join(rep.rm_lines[1:])]


def texts_markdown(rep) -> list[str]:
    """The variants' texts: wrong steps behind the native traces' right answers, identical texts between variants."""
    parts = []
    if rep.wrong_steps:
        parts += ["## Wrong steps behind right answers",
                  "How many of SLM-RFT's verified-correct training traces reach their answer through a wrong step, "
                  "read from Style-Aligned (the native trace with its wrong steps repaired by the Oracle; "
                  "`repaired_steps` > 0 means the native trace had one):", "\n".join(rep.wrong_steps)]
    if not rep.identical.empty:
        parts += ["## Identical texts between variants",
                  "Per family and pair of variants, the share of the problems both have a trace for on which the "
                  "two completions are byte-identical (a pair that is mostly identical trains on nearly the same "
                  "data):", _md(identical_display(rep.identical))]
    return parts


def sections_markdown(rep, image_src) -> list[str]:
    """The Markdown blocks of the sections beyond the paper (empty where the study lacks their data)."""
    parts = texts_markdown(rep)
    if rep.sizes:
        sizes = pd.DataFrame([(f, lin, format_params(p)) for f, (lin, p) in rep.sizes.items()],
                             columns=["family", "lineage", "parameters"])
        parts += ["## The paradox by size",
                  "Each family's lineage and parameter count, read from its model folder:", _md(sizes)]
        if rep.size_lines:
            parts += ["Within a lineage, the gap at its smallest and largest model (paired bootstrap over the "
                      "benchmark items both answered):", "\n".join(rep.size_lines)]
        else:
            parts.append("No lineage has two sizes in this study: add a family of another size to see the trend.")
        if "size_gaps" in rep.plots:
            parts.append(f"![paradox by size]({image_src('size_gaps')})")
    if rep.difficulty_lines:
        parts += ["## The paradox by difficulty",
                  "The same variants' rank correlations with accuracy, on the benchmark items of one difficulty "
                  "at a time (the step count of the synthetic world's items, else the benchmark), pooled over "
                  "families and objectives:", "\n".join(rep.difficulty_lines)]
    if not rep.within.empty:
        w = rep.within.assign(variant=rep.within["variant"].map(variants.label),
                              interval=[f"[{lo:+.2f}, {hi:+.2f}]" for lo, hi in zip(rep.within["ci_low"], rep.within["ci_high"])])
        parts += ["## Exemplars: the paradox trace by trace",
                  "Within one variant, Spearman rho of each trace's reward and its own perplexity under the student "
                  "(bootstrap over traces). The table `exemplars` holds every trace's facts across variants "
                  "(`qup sql \"select * from exemplars\"`).",
                  _md(w[["model_family", "variant", "rho", "interval", "n_traces"]].round(3))]
    if not rep.exemplar_steps.empty:
        s = rep.exemplar_steps.assign(variant=rep.exemplar_steps["variant"].map(variants.label))
        parts += ["Mean reward and perplexity of the training traces by the problem's step count:",
                  _md(s.round(3))]
    if not rep.disagreements.empty:
        d = rep.disagreements
        show = d[["model_family", "problem_id", "n_steps", "reward_gain", "ppl_rise", "reward_native",
                  "reward_oracle_refined", "ppl_native", "ppl_oracle_refined"]].round(3)
        parts += ["Where reward and perplexity disagree most: the problems whose trace gained the most reward and "
                  "rose the most in perplexity from SLM-RFT to Oracle-Refined (texts side by side, the tokens "
                  "carrying the most loss highlighted, in report.html):", _md(show)]
    return parts


def _highlighted(tokens: list, losses: list) -> str:
    """A trace as escaped HTML, its HIGHLIGHT_TOKENS highest-loss tokens in <mark> with the loss as a title
    (only tokens above the trace's mean loss: a short easy trace gets few marks, not its least easy zeros)."""
    text = readable(list(tokens))
    losses = [float(x) for x in losses]
    mean = float(np.mean(losses)) if losses else 0.0
    top = {i for i in np.argsort(losses)[::-1][:HIGHLIGHT_TOKENS].tolist() if losses[i] > mean}
    out = []
    for i, (t, nll) in enumerate(zip(text, losses)):
        piece = html.escape(t, quote=True)
        out.append(f'<mark title="NLL {nll:.2f}">{piece}</mark>' if i in top else piece)
    return "".join(out)


def exemplars_html(rep) -> str:
    """The side-by-side block of report.html: native and Oracle-Refined texts of the disagreeing problems."""
    d = rep.disagreements
    if d.empty:
        return ""
    rows = []
    for _, r in d.iterrows():
        head = (f"{html.escape(str(r['model_family']))} / {html.escape(str(r['problem_id']))}: reward "
                f"{r['reward_native']:.2f} → {r['reward_oracle_refined']:.2f}, PPL {r['ppl_native']:.2f} → "
                f"{r['ppl_oracle_refined']:.2f}")
        rows.append(f"<tr><td colspan=2><b>{head}</b></td></tr><tr>"
                    f"<td><pre>{_highlighted(r['tokens_native'], r['token_nll_native'])}</pre></td>"
                    f"<td><pre>{_highlighted(r['tokens_oracle_refined'], r['token_nll_oracle_refined'])}</pre></td></tr>")
    return ("<h2>Exemplars side by side: SLM-RFT (left) and Oracle-Refined (right)</h2>"
            f"<p>Marked: each trace's (up to) {HIGHLIGHT_TOKENS} tokens with the largest loss under the student, "
            "above its mean loss (hover for the NLL).</p><table class=\"exemplars\">" + "".join(rows) + "</table>")


def section_files(rep) -> dict[str, bytes]:
    """The sections' CSVs (token lists left out: they are in the exemplars table)."""
    files = {}
    if not rep.rm_verdicts.empty:
        files["verdict_by_reward_model.csv"] = rep.rm_verdicts.to_csv(index=False).encode()
    if not rep.identical.empty:
        files["identical_texts.csv"] = rep.identical.to_csv(index=False).encode()
    if not rep.size_gaps.empty:
        files["sizes.csv"] = rep.size_gaps.to_csv(index=False).encode()
    if not rep.difficulty.empty:
        files["difficulty.csv"] = rep.difficulty.to_csv(index=False).encode()
    if not rep.within.empty:
        files["within_variant.csv"] = rep.within.to_csv(index=False).encode()
    if not rep.disagreements.empty:
        cols = [c for c in rep.disagreements.columns if not c.startswith(("tokens_", "token_nll_"))]
        files["exemplar_disagreements.csv"] = rep.disagreements[cols].to_csv(index=False).encode()
    return files
