"""The paradox report: rank statistics, the generated verdict, and the files a researcher opens."""

import numpy as np
import pandas as pd
import pytest

from qup_assets.report.analysis import (
    FamilyData,
    correlations,
    kendall,
    paired_differences,
    paper_correlations,
    spearman,
    verdict,
)
from qup_assets.variants import all_variants

# The paper's five variants, in registry order (the unit families below carry the paper's numbers for them).
VARIANTS = [v.name for v in all_variants() if v.paper]


def test_rank_correlations_match_textbook_values():
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert kendall([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert kendall([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(5 / np.sqrt(5 * 6))  # tau-b with a tie
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))  # no ranking in x: undefined, not zero
    paper = paper_correlations().set_index("x")
    assert paper.loc["reward", "spearman"] == pytest.approx(-1.0)  # the published shape: reward anti-ranks accuracy


def _family(name, reward_means, ppl_means, acc_means, n_problems=400, n_items=400, seed=0):
    """A family whose per-problem numbers are noisy draws around the given per-variant means."""
    rng = np.random.default_rng(seed)
    v = len(VARIANTS)
    rewards = np.array(reward_means)[:, None] + rng.normal(0, 0.5, (v, n_problems))
    tokens = np.full((v, n_problems), 100.0)
    nll = np.log(np.array(ppl_means))[:, None] * tokens * rng.uniform(0.9, 1.1, (v, n_problems))
    acc = {o: rng.binomial(4, np.clip(np.array(acc_means), 0, 1)[:, None], (v, n_items)) / 4 for o in ("sft", "dft")}
    bench = np.array(["a"] * (n_items // 2) + ["b"] * (n_items // 2))
    return FamilyData(name, VARIANTS, rewards, nll, tokens, acc, bench)


def test_verdict_states_the_paradox_when_reward_anti_ranks_and_ppl_ranks_accuracy():
    # variant order: native, refined, synthesized, reference, style_aligned (the paper's shape)
    fams = [_family(f, [1.47, 1.70, 1.88, 1.78, 1.37], [1.52, 1.85, 2.69, 2.2, 1.46],
                    [0.37, 0.34, 0.30, 0.31, 0.39], seed=i) for i, f in enumerate(["qwen", "llama"])]
    corrs = correlations(fams, ["sft", "dft"], samples=200, seed=0)
    text = " ".join(verdict(corrs, ["sft", "dft"]))
    assert "pooled over families" in text and "n = 20" in text
    assert "higher reward predicted LOWER accuracy" in text
    assert "lower perplexity under the student predicted higher accuracy" in text
    assert "holds here in its strong form" in text


def test_verdict_says_the_paradox_does_not_hold_when_reward_ranks_accuracy():
    fams = [_family("qwen", [1, 2, 3, 4, 5], [2.0, 1.9, 1.8, 1.7, 1.6], [0.1, 0.2, 0.3, 0.4, 0.5])]
    text = " ".join(verdict(correlations(fams, ["dft"], samples=200, seed=0), ["dft"]))
    assert "higher reward predicted higher accuracy" in text and "does not hold" in text


def test_verdict_is_inconclusive_when_variants_are_indistinguishable():
    fams = [_family("qwen", [1.0] * 5, [1.5] * 5, [0.3] * 5, n_problems=30, n_items=20)]
    text = " ".join(verdict(correlations(fams, ["dft"], samples=200, seed=0), ["dft"]))
    assert "inconclusive" in text


def test_paired_difference_interval_excludes_zero_only_for_a_real_gap():
    fam = _family("qwen", [0] * 5, [1.5] * 5, [0.30, 0.30, 0.30, 0.30, 0.60])
    d = paired_differences([fam], ["dft"], samples=300, seed=0).set_index(["variant", "versus"])
    gap = d.loc[("style_aligned", "oracle_refined")]
    assert gap["difference"] == pytest.approx(0.3, abs=0.06) and gap["ci_low"] > 0.2
    same = d.loc[("native", "oracle_refined")]
    assert same["ci_low"] < 0 < same["ci_high"]


def test_slm_rft_is_checked_against_the_base_model_not_assumed_to_help():
    from qup_assets.report.analysis import rft_sentences

    lifted = _family("qwen", [0] * 5, [1.5] * 5, [0.40, 0.30, 0.30, 0.30, 0.30])
    lifted.base = np.random.default_rng(1).binomial(4, 0.25, len(lifted.benchmarks)) / 4
    flat = _family("llama", [0] * 5, [1.5] * 5, [0.25, 0.30, 0.30, 0.30, 0.30], seed=2)
    flat.base = np.random.default_rng(3).binomial(4, 0.25, len(flat.benchmarks)) / 4
    no_base = _family("other", [0] * 5, [1.5] * 5, [0.3] * 5, seed=4)
    d = paired_differences([lifted, flat, no_base], ["dft"], samples=300, seed=0)
    rft = d[d["versus"] == "base"].set_index("model_family")
    assert set(rft.index) == {"qwen", "llama"}  # a family without a base eval gets no row, not a made-up one
    assert rft.loc["qwen", "difference"] == pytest.approx(0.15, abs=0.05) and rft.loc["qwen", "ci_low"] > 0
    assert rft.loc["llama", "ci_low"] < 0 < rft.loc["llama", "ci_high"]
    text = "\n".join(rft_sentences(d))
    assert "qwen (DFT): fine-tuning on its own verified traces lifts" in text
    assert "llama (DFT): fine-tuning on its own verified traces does not measurably change" in text


def _report_for(tmp_path, description="a unit study"):
    """A Report over one synthetic family with the paper's shape, plots drawn."""
    from qup_assets.report.analysis import correlation_table, gap_sentences
    from qup_assets.report.render import Report, make_plots

    fams = [_family("qwen", [1.47, 1.70, 1.88, 1.78, 1.37], [1.52, 1.85, 2.69, 2.2, 1.46],
                    [0.37, 0.34, 0.30, 0.31, 0.39])]
    corrs = correlations(fams, ["sft", "dft"], samples=100, seed=0)
    diffs = paired_differences(fams, ["sft", "dft"], samples=100, seed=0)
    t1 = pd.DataFrame([{"model_family": "qwen", "variant": v, "reward_rm": r, "reward_rm_ci_low": r - 0.1,
                        "reward_rm_ci_high": r + 0.1, "avg_at_k_sft": a, "ci_low_sft": a - 0.05,
                        "ci_high_sft": a + 0.05, "avg_at_k_dft": a, "ci_low_dft": a - 0.05, "ci_high_dft": a + 0.05}
                       for v, r, a in zip(VARIANTS, [1.47, 1.70, 1.88, 1.78, 1.37], [0.37, 0.34, 0.30, 0.31, 0.39])])
    t2 = pd.DataFrame([{"model_family": "qwen", "variant": v, "global_ppl": p, "ppl_q1": p, "ppl_q2": p,
                        "ppl_q3": p, "ppl_q4": p, "reward": r, "semantic_preservation": 0.9, "avg_at_k_sft": a,
                        "avg_at_k_dft": a}
                       for v, r, p, a in zip(VARIANTS, [1.47, 1.70, 1.88, 1.78, 1.37], [1.52, 1.85, 2.69, 2.2, 1.46],
                                             [0.37, 0.34, 0.30, 0.31, 0.39])])
    rep = Report("unit", description, True, ["sft", "dft"], ["rm"], 4, t1, t2, correlation_table(corrs), diffs,
                 paper_correlations(), verdict(corrs, ["sft", "dft"]), gap_sentences(diffs),
                 loss_curves={("qwen", "native", "sft"): [(1, 2.0), (2, 1.5)]})
    rep.plots = make_plots(rep)
    return rep


def test_report_files_are_written_and_the_html_is_self_contained(tmp_path):
    from qup_assets.report.render import write_report

    rep = _report_for(tmp_path)
    paths = write_report(rep, tmp_path / "r")
    for name in ["report.md", "report.html", "table1.csv", "table2.csv", "correlations.csv", "paper_reference.csv",
                 "reward_vs_accuracy.png", "ppl_vs_accuracy.png", "quartile_ppl.png", "training_loss.png"]:
        assert paths[name].stat().st_size > 0, name
    md = paths["report.md"].read_text()
    assert "Style-Aligned (Qwen-72B oracle) | 39.12" in md  # the paper's numbers, labelled as such
    assert "synthetic world" in md.lower() and "![reward vs accuracy](reward_vs_accuracy.png)" in md
    html = paths["report.html"].read_text()
    assert "<table>" in html and html.count("data:image/png;base64,") == 5 and 'src="reward' not in html
    assert pd.read_csv(paths["table1.csv"]).shape[0] == 5


def test_paired_comparisons_are_a_forest_plot_and_only_the_deciding_ones_stay_sentences(tmp_path):
    """Each question's comparisons are drawn (difference and interval per family, objective and opponent); the
    report keeps a sentence only where the interval excludes zero and counts the others."""
    from PIL import Image

    from qup_assets.report.analysis import gap_sentences
    from qup_assets.report.forest import comparison_rows
    from qup_assets.report.render import markdown, write_report

    rep = _report_for(tmp_path)
    # one comparison that decides, one that does not: Style-Aligned against Oracle-Refined and SLM-RFT, DFT
    rows = [{"model_family": "qwen", "objective": "dft", "variant": "style_aligned", "versus": "oracle_refined",
             "difference": 0.05, "ci_low": 0.02, "ci_high": 0.08},
            {"model_family": "qwen", "objective": "dft", "variant": "style_aligned", "versus": "native",
             "difference": 0.01, "ci_low": -0.02, "ci_high": 0.04}]
    rep.differences = pd.DataFrame(rows)
    rep.gaps = gap_sentences(rep.differences)
    from qup_assets.report.render import make_plots

    rep.plots = make_plots(rep)
    assert len(comparison_rows(rep.differences, "gaps")) == 2
    paths = write_report(rep, tmp_path / "r")
    img = Image.open(paths["forest_style_aligned.png"])
    assert img.size[0] > 600 and img.size[1] > 100
    md = markdown(rep, lambda n: f"{n}.png")
    assert "![Style-Aligned minus Oracle-Refined and SLM-RFT](forest_style_aligned.png)" in md
    assert "Style-Aligned is above Oracle-Refined (+5.0 points" in md
    assert "not distinguishable" not in md
    assert "The other 1 of 2 comparisons have intervals that include zero" in md
    # no rows for a question: no plot, no image link
    assert "forest_rft" not in rep.plots and "forest_rft" not in md


def test_the_report_escapes_hostile_text(tmp_path):
    from qup_assets.report.render import html_page

    from .helpers import payloads

    sentinel = tmp_path / "PWNED"
    rep = _report_for(tmp_path, description=f"<script>fetch('/x')</script> {payloads(sentinel)[0]}")
    page = html_page(rep)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert not sentinel.exists()


def test_a_training_grid_reports_its_main_point_and_never_pools_the_points():
    """paper.yaml trains a 4-point grid: per-problem accuracies of one point only reach the correlations and
    paired intervals (pooling would count every benchmark item four times and narrow the CIs)."""
    import pandas as pd

    from qup_assets.report.analysis import family_data

    ids, items = [f"p{i}" for i in range(5)], [f"b{i}" for i in range(6)]
    rewards = {v: pd.DataFrame({"model_family": "f", "problem_id": ids, "score": 1.0}) for v in VARIANTS}
    adaptation = {v: pd.DataFrame({"model_family": "f", "problem_id": ids, "nll": 2.0, "n_tokens": 10}) for v in VARIANTS}
    grid = [(2e-5, 128, 0.1), (2e-5, 256, 0.2), (5e-5, 128, 0.3), (5e-5, 256, 0.9)]  # (lr, batch, accuracy)
    per_problem = {v: pd.DataFrame([{"model_family": "f", "objective": "sft", "lr": lr, "batch_size": bs,
                                     "benchmark": "math", "problem_id": i, "accuracy": acc + 0.01 * j}
                                    for j, v2 in enumerate(VARIANTS) if v2 == v
                                    for lr, bs, acc in grid for i in items]) for v in VARIANTS}
    main = family_data("f", rewards, adaptation, per_problem, ["sft"], lr=5e-5, batch_size=256)
    assert main.accuracy["sft"].shape == (len(VARIANTS), len(items))  # one point, not four copies
    assert main.accuracy["sft"][:, 0] == pytest.approx([0.9 + 0.01 * j for j in range(len(VARIANTS))])
    # a grid without the study's own point: its first point (lowest lr, then batch size)
    other = family_data("f", rewards, adaptation, per_problem, ["sft"], lr=1e-4, batch_size=64)
    assert other.accuracy["sft"][0] == pytest.approx([0.1] * len(items))


def test_the_grid_sensitivity_table_lists_every_point_and_one_point_studies_have_none(tmp_path):
    import pandas as pd

    from qup_assets.report.render import markdown, write_report
    from qup_assets.report.tables import grid_table

    def evals(points):
        return pd.DataFrame([{"model_family": "qwen", "objective": "sft", "lr": lr, "batch_size": bs, "benchmark": b,
                              "avg_at_k": acc, "ci_low": acc - 0.1, "ci_high": acc + 0.1}
                             for lr, bs, acc in points for b in ("macro", "math")])

    assert grid_table({v: evals([(5e-5, 256, 0.3)]) for v in VARIANTS}).empty
    g = grid_table({v: evals([(5e-5, 256, 0.3), (2e-5, 128, 0.25)]) for v in VARIANTS})
    assert len(g) == 2 * len(VARIANTS) and set(g["lr"]) == {5e-5, 2e-5}  # macro rows only, every point
    rep = _report_for(tmp_path)
    assert "Training grid" not in markdown(rep, str)
    rep.grid = g
    assert "Training grid: sensitivity" in markdown(rep, str)
    assert (write_report(rep, tmp_path / "r")["grid.csv"]).read_text().count("\n") == len(g) + 1


def test_several_reward_models_count_equally_whatever_their_scale():
    import pandas as pd

    from qup_assets.report.analysis import combined_reward

    def frame(big, small):  # three problems; a wide-scale RM and a narrow one
        return pd.DataFrame([{"model_family": "f", "problem_id": f"p{j}", "reward_model": rm, "score": s + j * unit}
                             for rm, s, unit in [("big", big, 1000.0), ("small", small, 1.0)] for j in range(3)])

    # the 1000x RM prefers oracle by 1000 of its units, the narrow one native by 1 of its units
    rewards = {"native": frame(big=0.0, small=1.0), "oracle": frame(big=1000.0, small=0.0)}
    raw = {v: df["score"].mean() for v, df in rewards.items()}
    assert raw["oracle"] > raw["native"] + 100  # a raw mean: the wide RM decides alone
    z = {v: df["score"].mean() for v, df in combined_reward(rewards).items()}
    assert z["oracle"] == pytest.approx(z["native"])  # z-scored: the RMs disagree equally, so they cancel
    one = {v: df[df["reward_model"] == "big"] for v, df in rewards.items()}  # one RM: its raw scores
    assert combined_reward(one)["oracle"]["score"].tolist() == [1000.0, 2000.0, 3000.0]


def test_the_verdict_is_given_under_each_reward_model_and_says_when_they_disagree(tmp_path):
    """Two RMs on the same data: one anti-ranks accuracy (the paper's shape), the other is its mirror image."""
    from dataclasses import replace

    from qup_assets.report.render import markdown
    from qup_assets.report.reward_models import by_reward_model, one_line, reward_model_lines, verdict_by_reward_model

    shape = dict(reward_means=[1.47, 1.70, 1.88, 1.78, 1.37], ppl_means=[1.52, 1.85, 2.69, 2.2, 1.46],
                 acc_means=[0.37, 0.34, 0.30, 0.31, 0.39])
    fams = [_family(f, **shape, n_problems=100, n_items=200, seed=i) for i, f in enumerate(["qwen", "llama"])]
    mirrored = [replace(f, rewards=-f.rewards) for f in fams]
    corrs = correlations(fams, ["dft"], samples=100, seed=0)  # the headline (its PPL correlation is reused)
    table = verdict_by_reward_model({"outcome-rm": fams, "mirror-rm": mirrored}, corrs, ["dft"], 100, 0)
    states = dict(zip(table["reward_model"], table["state"]))
    assert states == {"outcome-rm": "strong", "mirror-rm": "absent"}
    assert set(table["scope"]) == {"pooled"} and set(table["n_points"]) == {10}
    lines = reward_model_lines(table)
    assert lines[0] == "The verdict depends on the reward model: strong under outcome-rm; absent under mirror-rm."
    assert lines[2].startswith("- mirror-rm: absent (rho(reward, accuracy) = +")
    # the one-line headline the UI shows: the same state and intervals as the verdict, then each RM's
    head = one_line(corrs, ["dft"], table)
    r = next(c for c in corrs if (c.scope, c.x, c.method) == ("pooled", "reward", "spearman"))
    assert head.startswith(f"The paradox holds in its strong form (pooled over families, DFT): rho(reward, accuracy) "
                           f"{r.rho:+.2f} [{r.ci_low:+.2f}, {r.ci_high:+.2f}], rho(PPL, accuracy) ")
    assert head.endswith("; under each RM alone: strong under outcome-rm; absent under mirror-rm.") and "\n" not in head
    agree = verdict_by_reward_model({"a": fams, "b": fams}, corrs, ["dft"], 100, 0)
    assert reward_model_lines(agree)[0] == "The verdict is the same under each of the 2 reward models: strong."
    # one RM: the headline is its own, and the sentence says there is nothing to compare it with
    alone = verdict_by_reward_model({"a": fams}, corrs, ["dft"], 100, 0)
    assert alone["rho"].iloc[0] == next(c.rho for c in corrs if (c.scope, c.x, c.method) == ("pooled", "reward", "spearman"))
    assert reward_model_lines(alone)[0].startswith("One reward model (a): strong;")
    # the long reward tables split by RM, raw scores kept
    long = pd.DataFrame({"model_family": "f", "problem_id": ["p0", "p0"], "reward_model": ["b", "a"], "score": [5.0, -1.0]})
    split = by_reward_model({"native": long})
    assert list(split) == ["a", "b"] and split["b"]["native"]["score"].tolist() == [5.0]
    rep = _report_for(tmp_path)
    rep.rm_verdicts, rep.rm_lines = table, lines
    md = markdown(rep, str)
    assert "**Under each reward model alone**" in md and lines[0] in md and lines[1] in md
    assert md.index(lines[0]) > md.index("## Verdict")


def test_identical_texts_are_counted_per_family_and_pair_on_the_problems_both_have():
    from qup_assets.report.texts import identical_display, identical_shares

    def traces(fam_texts):
        return pd.DataFrame([{"model_family": f, "problem_id": p, "completion": t} for f, p, t in fam_texts])

    native = traces([("q", "p1", "a"), ("q", "p2", "b"), ("q", "p3", "c"), ("q", "p4", "d"), ("l", "p1", "x")])
    refined = traces([("q", "p1", "a"), ("q", "p2", "B"), ("q", "p3", "c"), ("q", "p4", None), ("q", "p9", "z"),
                      ("l", "p1", "x ")])  # p4: a failed rewrite (no text), p9: native has none
    aligned = traces([("q", "p1", "a"), ("l", "p1", "x")])
    shares = identical_shares({"native": native, "oracle_refined": refined, "style_aligned": aligned})
    got = {(r.model_family, r.variant, r.versus): (r.common, r.identical) for r in shares.itertuples()}
    assert got == {("l", "native", "oracle_refined"): (1, 0), ("l", "native", "style_aligned"): (1, 1),
                   ("l", "oracle_refined", "style_aligned"): (1, 0), ("q", "native", "oracle_refined"): (3, 2),
                   ("q", "native", "style_aligned"): (1, 1), ("q", "oracle_refined", "style_aligned"): (1, 1)}
    shown = identical_display(shares).set_index("pair")
    assert shown.loc["SLM-RFT (native) / Oracle-Refined", "q"] == "66.7% of 3"
    assert list(shown.columns) == ["l", "q"] and len(shown) == 3


def test_wrong_steps_behind_right_answers_are_read_from_style_aligned_repairs():
    from qup_assets.report.texts import wrong_step_lines

    native = pd.DataFrame({"model_family": ["q"] * 4 + ["l"], "problem_id": ["p1", "p2", "p3", "p4", "p1"],
                           "completion": "t"})
    aligned = pd.DataFrame({"model_family": ["q"] * 4, "problem_id": ["p1", "p2", "p3", "p4"],
                            "correct": [True, True, True, False], "repaired_steps": [2, 0, 1, 3],
                            "oracle": "symbolic"})
    lines = wrong_step_lines({"native": native, "style_aligned": aligned})
    assert lines[0].startswith("- l: cannot be computed")
    assert lines[1] == ("- q: 66.7% of the verified-correct native traces (SLM-RFT's training data) contain a wrong "
                        "step (2 of 3: the Style-Aligned rewrites in which symbolic repaired at least one step; 1 "
                        "without a verified rewrite left out).")
    assert "cannot be computed" in wrong_step_lines({"native": native})[0]
