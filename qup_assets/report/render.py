"""Writing the report: Markdown, one CSV per table, one PNG per plot and a self-contained HTML page."""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from qup_assets import variants
from qup_assets.common import write_json_atomic
from qup_assets.markdown import markdown_table
from qup_assets.report.analysis import paper_table
from qup_assets.report.forest import QUESTIONS, comparison, forest_plot
from qup_assets.report.plotting import OBJ_MARKERS, png
from qup_assets.report.sections import (
    exemplars_html,
    section_files,
    sections_markdown,
    size_plot,
    verdict_by_rm_markdown,
)

FAMILY_STYLES = ["-", "--", ":", "-."]


@dataclass
class Report:
    study: str
    description: str
    synthetic: bool
    objectives: list[str]
    reward_models: list[str]
    k: int
    table1: pd.DataFrame
    table2: pd.DataFrame
    correlations: pd.DataFrame
    differences: pd.DataFrame
    paper_correlations: pd.DataFrame
    verdict: list[str]
    gaps: list[str]
    rft: list[str] = field(default_factory=list)  # SLM-RFT vs the base model, per family and objective
    loss_curves: dict = field(default_factory=dict)  # (family, variant, objective) -> [(step, loss)]
    plots: dict = field(default_factory=dict)  # name -> PNG bytes
    families: list[str] = field(default_factory=list)  # exactly the study file's families that were evaluated
    excluded: list[str] = field(default_factory=list)  # evaluated partitions no longer in the study file
    grid: pd.DataFrame = field(default_factory=pd.DataFrame)  # every training grid point (empty: one point)
    rm_diagnostics: pd.DataFrame = field(default_factory=pd.DataFrame)  # reward/diagnostics.py, per family x RM
    reward_distribution: pd.DataFrame = field(default_factory=pd.DataFrame)  # tables.reward_distribution
    # beyond the paper (report/breakdown.py, report/exemplars.py; rendered by report/sections.py)
    sizes: dict = field(default_factory=dict)  # family -> (lineage, parameters)
    size_gaps: pd.DataFrame = field(default_factory=pd.DataFrame)  # breakdown.size_table
    size_lines: list[str] = field(default_factory=list)
    selection: list[str] = field(default_factory=list)  # selected variants against the others
    difficulty: pd.DataFrame = field(default_factory=pd.DataFrame)
    difficulty_lines: list[str] = field(default_factory=list)
    disagreements: pd.DataFrame = field(default_factory=pd.DataFrame)  # exemplars.disagreements
    within: pd.DataFrame = field(default_factory=pd.DataFrame)  # exemplars.within_variant_correlations
    exemplar_steps: pd.DataFrame = field(default_factory=pd.DataFrame)  # exemplars.by_steps
    rm_verdicts: pd.DataFrame = field(default_factory=pd.DataFrame)  # reward_models.verdict_by_reward_model
    rm_lines: list[str] = field(default_factory=list)  # reward_models.reward_model_lines
    identical: pd.DataFrame = field(default_factory=pd.DataFrame)  # texts.identical_shares
    wrong_steps: list[str] = field(default_factory=list)  # texts.wrong_step_lines
    headline: str = ""  # reward_models.one_line: the finding in one line


# ---------------------------------------------------------------- plots


def _colors():
    import matplotlib.pyplot as plt

    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {v: cycle[i % len(cycle)] for i, v in enumerate(variants.names())}


def _scatter(rep: Report, xcol: str, xlabel: str, name: str) -> bytes:
    """One panel per family (a shared accuracy axis): colour = variant, marker = objective, so every point can be
    told apart (in one panel, three families' 36 points with error bars overlapped)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = _colors()
    t1 = rep.table1.set_index(["model_family", "variant"])
    t2 = rep.table2.set_index(["model_family", "variant"])
    families = sorted({f for f, _ in t2.index}) or [""]
    fig, axes = plt.subplots(1, len(families), figsize=(4.2 * len(families) + 2.2, 4.2), sharey=True, squeeze=False)
    for ax, fam in zip(axes[0], families):
        for (f, v), row in t2.iterrows():
            if f != fam:
                continue
            r1 = t1.loc[(f, v)] if (f, v) in t1.index else None
            for o in rep.objectives:
                acc = r1.get(f"avg_at_k_{o}") if r1 is not None else None
                if acc is None or (isinstance(acc, float) and math.isnan(acc)):
                    continue
                x, xerr = row[xcol], None
                if xcol == "reward" and len(rep.reward_models) == 1:
                    lo, hi = r1.get(f"reward_{rep.reward_models[0]}_ci_low"), r1.get(f"reward_{rep.reward_models[0]}_ci_high")
                    if lo is not None and not math.isnan(lo):
                        xerr = [[x - lo], [hi - x]]
                yerr = [[100 * (acc - r1[f"ci_low_{o}"])], [100 * (r1[f"ci_high_{o}"] - acc)]]
                ax.errorbar(x, 100 * acc, xerr=xerr, yerr=yerr, fmt=OBJ_MARKERS.get(o, "o"), color=colors[v],
                            alpha=0.85, capsize=2, ms=6)
        ax.set_title(fam, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        xs = t2.loc[[i for i in t2.index if i[0] == fam], xcol].dropna()
        if xcol == "global_ppl" and len(xs) and xs.max() > 10 * xs.min():  # log only where it spans decades
            ax.set_xscale("log")
    axes[0][0].set_ylabel(f"Avg@{rep.k} (%)")
    handles = [plt.Line2D([], [], color=colors[v], marker="o", ls="", label=variants.label(v))
               for v in sorted({v for _, v in t2.index}, key=variants.names().index)]
    handles += [plt.Line2D([], [], color="gray", marker=OBJ_MARKERS.get(o, "o"), ls="", label=o.upper())
                for o in rep.objectives]
    fig.legend(handles=handles, fontsize=7, loc="center right")
    fig.suptitle(name)
    fig.tight_layout(rect=(0, 0, 1 - 2.1 / fig.get_figwidth(), 1))
    return png(fig)


def _quartiles(rep: Report) -> bytes:
    import matplotlib.pyplot as plt

    colors = _colors()
    fig, ax = plt.subplots(figsize=(6.2, 3.8))
    for i, (fam, g) in enumerate(rep.table2.groupby("model_family", sort=True)):
        for _, row in g.iterrows():
            ax.plot([1, 2, 3, 4], [row[f"ppl_q{q}"] for q in (1, 2, 3, 4)], FAMILY_STYLES[i % 4], marker="o",
                    color=colors[row["variant"]], label=f"{variants.label(row['variant'])} ({fam})")
    ax.set_xticks([1, 2, 3, 4], ["Q1", "Q2", "Q3", "Q4"])
    ax.set_xlabel("quartile of the trace")
    ax.set_ylabel("perplexity under the base student")
    ax.set_yscale("log")
    ax.set_title("where in a trace the student is surprised")
    ax.legend(fontsize=6, ncol=2)
    return png(fig)


def _loss_curves(rep: Report) -> bytes | None:
    import matplotlib.pyplot as plt

    if not rep.loss_curves:
        return None
    colors = _colors()
    families = sorted({f for f, _, _ in rep.loss_curves})
    fig, axes = plt.subplots(1, len(rep.objectives), figsize=(6.2 * len(rep.objectives) / 1.4, 3.6), squeeze=False)
    for ax, o in zip(axes[0], rep.objectives):
        for (fam, v, obj), curve in sorted(rep.loss_curves.items()):
            if obj != o or not curve:
                continue
            ax.plot([s for s, _ in curve], [l for _, l in curve], FAMILY_STYLES[families.index(fam) % 4],
                    color=colors[v], label=f"{variants.label(v)} ({fam})")
        ax.set_title(f"{o.upper()} training loss")
        ax.set_xlabel("optimizer step")
        ax.set_yscale("log")
    axes[0][0].legend(fontsize=6)
    return png(fig)


def make_plots(rep: Report) -> dict[str, bytes]:
    plots = {
        "reward_vs_accuracy": _scatter(rep, "reward", "mean reward (reward-model score)", "perceived quality vs utility"),
        "ppl_vs_accuracy": _scatter(rep, "global_ppl", "perplexity under the base student",
                                    "adaptation cost vs utility"),
        "quartile_ppl": _quartiles(rep),
    }
    loss = _loss_curves(rep)
    if loss:
        plots["training_loss"] = loss
    sizes = size_plot(rep)
    if sizes:
        plots["size_gaps"] = sizes
    for q, question in QUESTIONS.items():
        forest = forest_plot(rep.differences, q)
        if forest:
            plots[question.plot] = forest
    return plots


# ---------------------------------------------------------------- text


def _ci(v, lo, hi, pct: bool) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    s = 100 if pct else 1
    return f"{s * v:.1f} [{s * lo:.1f}, {s * hi:.1f}]" if pct else f"{v:.2f} [{lo:.2f}, {hi:.2f}]"


def table1_display(rep: Report) -> pd.DataFrame:
    rows = []
    for _, r in rep.table1.iterrows():
        row = {"family": r["model_family"], "variant": variants.label(r["variant"])}
        for rm in rep.reward_models:
            row[f"reward ({rm})"] = _ci(r.get(f"reward_{rm}"), r.get(f"reward_{rm}_ci_low"), r.get(f"reward_{rm}_ci_high"), False)
        for o in rep.objectives:
            row[f"Avg@{rep.k} {o.upper()} (%)"] = _ci(r.get(f"avg_at_k_{o}"), r.get(f"ci_low_{o}"), r.get(f"ci_high_{o}"), True)
        rows.append(row)
    return pd.DataFrame(rows)


def table2_display(rep: Report) -> pd.DataFrame:
    t = rep.table2.copy()
    t["variant"] = [variants.label(v) for v in t["variant"]]
    for o in rep.objectives:
        t[f"avg_at_k_{o}"] = (100 * t[f"avg_at_k_{o}"]).round(1)
    cols = ["model_family", "variant", "global_ppl", "ppl_q1", "ppl_q2", "ppl_q3", "ppl_q4", "reward",
            "semantic_preservation"] + [f"avg_at_k_{o}" for o in rep.objectives]
    return t[cols].round(3).rename(columns={"model_family": "family"})


def paper_display() -> pd.DataFrame:
    p = paper_table()
    p["variant"] = [variants.label(v) for v in p["variant"]]
    return p.rename(columns={"paper_name": "name in the paper", "dft_avg_at_16": "DFT Avg@16 (%)",
                             "mean_reward": "mean reward", "ppl": "PPL"})


def _md(df: pd.DataFrame) -> str:
    return markdown_table(df, max_rows=None, width=None, na="-")


def world_statement(rep: Report) -> str:
    if not rep.synthetic:
        return ""
    return ("**What this study is.** The synthetic world: generated arithmetic word problems with exact answers, "
            "tiny student models pretrained here from scratch (each family in its own solution style), a symbolic "
            "Oracle that checks and rewrites steps with exact rational arithmetic, and a reward model trained here "
            "as outcome RMs are (mostly right-vs-wrong pairs within one writer's style, some pairs preferring the "
            "Oracle's style; its diagnostics below show what it learned). "
            "The numbers test the pipeline and the mechanism, not Qwen2.5-Math: run data/studies/paper.yaml on GPUs "
            "for that.")


def _family_lines(rep: Report) -> list[str]:
    lines = [f"Families in this report (the study file's): {', '.join(rep.families)}."] if rep.families else []
    if rep.excluded:
        lines.append(f"Excluded: {', '.join(rep.excluded)} (removed from the study file; their data is kept in "
                     "the store but not pooled here).")
    return lines


def rm_section(rep: Report) -> list[str]:
    """Reward-model diagnostics: is "perceived quality" evidence of correctness for this family?"""
    if rep.rm_diagnostics.empty:
        return []
    d = rep.rm_diagnostics
    show = d.assign(**{"P(correct > wrong)": [f"{p:.3f} [{lo:.3f}, {hi:.3f}]" for p, lo, hi in
                                              zip(d["p_correct_over_wrong"], d["ci_low"], d["ci_high"])]})
    show = show[["model_family", "reward_model", "P(correct > wrong)", "n_correct", "n_wrong", "mean_correct",
                 "mean_wrong", "sd_correct", "sd_wrong"]].round(3)
    parts = ["## Reward-model diagnostics",
             "Each RM scores the family's own native samples, correct and wrong (verified wrong after a normal stop): "
             "P(correct outscores wrong) is the ROC AUC, 95% bootstrap interval. 0.5 is chance: such an RM's "
             "perceived quality says nothing about correctness.", _md(show)]
    parts += [f"**Warning:** {w}" for w in d["warning"] if w]
    if not rep.reward_distribution.empty:
        dist = rep.reward_distribution.assign(variant=rep.reward_distribution["variant"].map(variants.label))
        parts += ["Score distribution per variant (raw scores, the common problem set):", _md(dist.round(3))]
    return parts


def markdown(rep: Report, image_src) -> str:
    """The report as Markdown; image_src(name) gives each plot's link (a file name, or a data: URI)."""
    corr = rep.correlations
    sp = corr[corr["method"] == "spearman"].copy()
    show = sp.assign(interval=[f"[{lo:+.2f}, {hi:+.2f}]" for lo, hi in zip(sp["ci_low"], sp["ci_high"])])
    show = show[["scope", "objective", "x", "rho", "interval", "n_points"]].round(3)
    kd = corr[corr["method"] == "kendall"]
    kshow = kd.assign(interval=[f"[{lo:+.2f}, {hi:+.2f}]" for lo, hi in zip(kd["ci_low"], kd["ci_high"])])
    kshow = kshow[["scope", "objective", "x", "rho", "interval", "n_points"]].round(3)
    parts = [
        f"# The Quality-Utility Paradox: study `{rep.study}`",
        rep.description,
        world_statement(rep),
        *_family_lines(rep),
        "## Verdict",
        "\n\n".join(rep.verdict),
        *verdict_by_rm_markdown(rep),
        "**Does Style-Aligned Refinement close the gap?** (macro Avg@k difference, paired bootstrap over benchmark items)",
        *(comparison(rep, "gaps", rep.gaps, image_src) or ["(no style-aligned results yet)"]),
        *(["**Does choosing data by the learner's perplexity beat choosing it by reward?** (each selected "
           "variant against the others, macro Avg@k difference, paired bootstrap over benchmark items)",
           *comparison(rep, "selection", rep.selection, image_src)] if rep.selection else []),
        *(["**Does fine-tuning on its own traces help?** (SLM-RFT against the base model, macro Avg@k, paired "
           "bootstrap over benchmark items)", *comparison(rep, "rft", rep.rft, image_src)] if rep.rft else []),
        f"## Table 1: perceived quality vs utility (mean reward and Avg@{rep.k}, 95% CIs)",
        _md(table1_display(rep)),
        "## Table 2: the mechanism (perplexity under the base student, by quartile of the trace)",
        _md(table2_display(rep)),
        *rm_section(rep),
        "## The paradox in numbers: rank correlation with accuracy across variants",
        "Spearman (each point is a family x variant x objective; interval: bootstrap over problems):",
        _md(show),
        "Kendall tau-b:",
        _md(kshow),
        f"![reward vs accuracy]({image_src('reward_vs_accuracy')})",
        f"![PPL vs accuracy]({image_src('ppl_vs_accuracy')})",
        f"![quartile PPL]({image_src('quartile_ppl')})",
    ]
    if "training_loss" in rep.plots:
        parts.append(f"![training loss]({image_src('training_loss')})")
    parts += sections_markdown(rep, image_src)
    if not rep.grid.empty:
        g = rep.grid.assign(interval=[f"[{lo:.3f}, {hi:.3f}]" for lo, hi in zip(rep.grid["ci_low"], rep.grid["ci_high"])])
        g = g.assign(variant=g["variant"].map(variants.label))
        parts += [f"## Training grid: sensitivity (macro Avg@{rep.k} at every lr x batch size)",
                  "Tables 1-2, the correlations and the verdict use the main point (the training section's lr and "
                  "batch size); the other points are here, not pooled into them.",
                  _md(g[["model_family", "variant", "objective", "lr", "batch_size", "avg_at_k", "interval"]].round(4))]
    pc = rep.paper_correlations
    parts += [
        "## Reference: the paper's published numbers (Qwen2.5-Math-1.5B, not this study)",
        _md(paper_display()),
        "Rank correlations over the paper's variants: " + "; ".join(
            f"{r['x']}: Spearman {r['spearman']:+.2f}, Kendall {r['kendall']:+.2f} (n = {r['n_points']})"
            for _, r in pc.iterrows()) + ".",
        "## Files",
        ", ".join(["table1.csv", "table2.csv", "correlations.csv", "differences.csv", "rm_diagnostics.csv",
                   "paper_reference.csv", *(["grid.csv"] if not rep.grid.empty else []), *section_files(rep)])
        + "; one PNG per plot; "
        "report.html (self-contained).",
    ]
    return "\n\n".join(p for p in parts if p) + "\n"


def write_report(rep: Report, out_dir: Path) -> dict[str, Path]:
    """Write every file of the report atomically enough for readers: each file by rename."""

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}

    def put(name: str, data: bytes):
        tmp = out_dir / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(out_dir / name)
        paths[name] = out_dir / name

    put("table1.csv", rep.table1.to_csv(index=False).encode())
    put("table2.csv", rep.table2.to_csv(index=False).encode())
    put("correlations.csv", rep.correlations.to_csv(index=False).encode())
    put("differences.csv", rep.differences.to_csv(index=False).encode())
    if not rep.rm_diagnostics.empty:
        put("rm_diagnostics.csv", rep.rm_diagnostics.to_csv(index=False).encode())
    put("paper_reference.csv", paper_table().to_csv(index=False).encode())
    if not rep.grid.empty:
        put("grid.csv", rep.grid.to_csv(index=False).encode())
    for name, data in {**section_files(rep), **{f"{n}.png": p for n, p in rep.plots.items()}}.items():
        put(name, data)
    put("headline.txt", table1_display(rep).to_string(index=False).encode())
    put("report.md", markdown(rep, lambda n: f"{n}.png").encode())
    put("report.html", html_page(rep).encode())
    paths["verdict.json"] = write_json_atomic({"verdict": rep.verdict, "gaps": rep.gaps, "rft": rep.rft,
                                               "selection": rep.selection, "sizes": rep.size_lines,
                                               "difficulty": rep.difficulty_lines, "by_reward_model": rep.rm_lines,
                                               "wrong_steps": rep.wrong_steps}, out_dir / "verdict.json")
    return paths


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _markdown_renderer():
    """CommonMark plus pipe tables. Raw HTML is off (the commonmark preset turns it on): model text and study
    descriptions reach the report, so a `<script>` in them must come out as text. Links keep markdown-it's
    validateLink: javascript:, vbscript:, file: and data: are refused, except data:image/(gif|png|jpeg|webp),
    which is how the plots are embedded."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table")


def _page_template():
    """The page shell (title, CSS) in report/page.html.j2, autoescaped: only the rendered body is marked safe."""
    from jinja2 import Environment, FileSystemLoader

    env = Environment(loader=FileSystemLoader(Path(__file__).parent), autoescape=True, keep_trailing_newline=True)
    return env.get_template("page.html.j2")


def markdown_to_html(md: str, title: str, after: str = "") -> str:
    """One self-contained page from Markdown: markdown-it renders the body, the jinja2 template wraps it.
    `after`: HTML appended to the body, already escaped by its writer (sections.exemplars_html)."""
    from markupsafe import Markup

    body = _markdown_renderer().render(md)
    return _page_template().render(study=title, body=Markup(body + after))


def html_page(rep: Report) -> str:
    """The report as one self-contained HTML page: the Markdown with every plot inlined as a data: URI, then
    the exemplars side by side with their highest-loss tokens marked."""
    return markdown_to_html(markdown(rep, lambda n: data_uri(rep.plots[n])), rep.study, exemplars_html(rep))
