"""The paradox broken down: by model size (gaps per family against parameters, their change within a lineage),
by benchmark difficulty, and for the compatibility-selected variant. Unit families with known gaps."""

import numpy as np
import pandas as pd
import pytest

from qup_assets.common import format_params
from qup_assets.report.analysis import FamilyData, paired_differences
from qup_assets.report.breakdown import (
    best_by_reward,
    by_difficulty,
    selection_sentences,
    size_pairs,
    size_sentences,
    size_table,
    study_pairs,
)
from qup_assets.variants import names

VARIANTS = names()


def _family(name, acc_means, reward_means=None, n_items=600, seed=0):
    """Per-variant accuracies around `acc_means` (registry order) on the same 600 items for every family."""
    rng = np.random.default_rng(seed)
    v = len(VARIANTS)
    rewards = np.array(reward_means or [1.0] * v)[:, None] + rng.normal(0, 0.3, (v, 50))
    tokens = np.full((v, 50), 100.0)
    nll = np.full((v, 50), 50.0)
    acc = {o: rng.binomial(4, np.clip(np.array(acc_means), 0, 1)[:, None], (v, n_items)) / 4 for o in ("dft",)}
    bench = np.array(["easy"] * (n_items // 2) + ["hard"] * (n_items // 2))
    items = np.array([f"p{i:04d}" for i in range(n_items)])
    return FamilyData(name, VARIANTS, rewards, nll, tokens, acc, bench, None, items)


def _acc(**means):
    base = {v: 0.3 for v in VARIANTS}
    base.update(means)
    return [base[v] for v in VARIANTS]


def test_pairs_follow_the_registry():
    pairs = study_pairs()
    assert ("style_aligned", "oracle_refined") in pairs and ("native", "oracle_synthesized") in pairs
    assert {("compat_selected", v) for v in VARIANTS if v != "compat_selected"} <= set(pairs)
    assert len(pairs) == len(set(pairs))
    assert size_pairs() == [("native", "oracle_refined"), ("native", "oracle_synthesized"),
                            ("native", "style_aligned"), ("style_aligned", "oracle_refined")]


def test_a_gap_that_widens_with_size_is_said_to_rise_and_one_that_stays_is_not():
    small = _family("q-small", _acc(native=0.30, oracle_refined=0.30), seed=1)
    large = _family("q-large", _acc(native=0.45, oracle_refined=0.30), seed=2)
    other = _family("llama", _acc(), seed=3)
    sizes = {"q-small": ("qwen2", 2.5e5), "q-large": ("qwen2", 9.4e5), "llama": ("llama", 9.3e5)}
    lines = size_sentences([small, large, other], sizes, ["dft"], samples=300, seed=0)
    assert all(line.startswith("- qwen2, DFT") for line in lines)  # one lineage has two sizes; llama has one
    rft_refined = next(line for line in lines if "SLM-RFT (native) minus Oracle-Refined" in line)
    assert "it rises" in rft_refined and "250K" in rft_refined and "940K" in rft_refined
    style = next(line for line in lines if "Style-Aligned minus Oracle-Refined" in line)
    assert "no change beyond the noise" in style
    diffs = paired_differences([small, large, other], ["dft"], 200, 0, pairs=study_pairs())
    table = size_table(diffs, sizes)
    assert set(zip(table["variant"], table["versus"])) == set(size_pairs())
    assert table.groupby("model_family")["parameters"].first().to_dict() == {"llama": 9.3e5, "q-large": 9.4e5,
                                                                             "q-small": 2.5e5}


def test_families_on_different_items_are_not_compared_as_pairs():
    a, b = _family("a", _acc()), _family("b", _acc(), n_items=400)
    lines = size_sentences([a, b], {"a": ("qwen2", 1e6), "b": ("qwen2", 4e6)}, ["dft"], samples=50, seed=0)
    assert lines == ["- qwen2: a and b were evaluated on different benchmark items; no paired comparison."]


def test_the_selected_variant_is_judged_against_the_highest_reward_variant():
    rewards = [1.0, 1.7, 1.9, 1.8, 1.4, 1.2]  # oracle_synthesized scores highest
    rewards = dict(zip(["native", "oracle_refined", "oracle_synthesized", "reference", "style_aligned",
                        "compat_selected"], rewards))
    fam = _family("q", _acc(compat_selected=0.45, oracle_synthesized=0.25), [rewards[v] for v in VARIANTS])
    assert best_by_reward([fam], ("compat_selected",)) == {"q": "oracle_synthesized"}
    diffs = paired_differences([fam], ["dft"], 300, 0, pairs=study_pairs())
    text = "\n".join(selection_sentences(diffs, [fam]))
    assert "Compat-Selected is above Oracle-Synthesized" in text and "choosing by reward" in text
    assert "Compat-Selected is above SLM-RFT (native)" in text


def test_the_paradox_is_judged_per_difficulty_of_the_benchmark_items():
    # hard items: accuracy falls with reward (the paradox); easy items: every variant the same
    rewards = [1.5, 1.7, 1.9, 1.8, 1.3, 1.4]
    hard = np.argsort(np.argsort(rewards))  # rank of each variant's reward
    fams = []
    for i in range(3):
        f = _family(f"f{i}", _acc(), rewards, seed=10 + i)
        rng = np.random.default_rng(i)
        f.accuracy["dft"][:, 300:] = rng.binomial(4, (0.6 - 0.08 * hard)[:, None], (len(VARIANTS), 300)) / 4
        f.nll = np.log(1.2 + 0.2 * hard)[:, None] * f.tokens
        fams.append(f)
    steps = pd.DataFrame({"benchmark": fams[0].benchmarks, "problem_id": fams[0].items,
                          "n_steps": [1] * 300 + [4] * 300})
    table, lines = by_difficulty(fams, steps, ["dft"], samples=200, seed=0)
    t = table.set_index("difficulty")
    assert list(t.index) == ["1 step", "4 steps"]
    assert t.loc["4 steps", "paradox"] == "strong" and t.loc["4 steps", "rho_reward"] < -0.8
    assert t.loc["1 step", "paradox"] != "strong"
    assert lines[1].startswith("- 4 steps (300 items x 3 families): the paradox holds in its strong form")
    assert lines[1].count("SLM-RFT minus Oracle-Refined") == 1 and lines[1].count(" DFT ") == 3  # one per family
    # a benchmark without step counts is its own bucket, named after the benchmark
    no_steps = steps.assign(n_steps=pd.NA)
    table, _ = by_difficulty(fams[:1], no_steps, ["dft"], samples=50, seed=0)
    assert list(table["difficulty"]) == ["easy", "hard"]


def test_a_study_without_sizes_has_no_size_table():
    assert size_table(pd.DataFrame(), {}).empty


@pytest.mark.slow
def test_a_familys_size_is_read_from_its_model_folder(micro_study):
    """base_model records lineage and parameter count from the folder; `qup plan` and the report show them."""
    import json

    from transformers import AutoModelForCausalLM

    from qup_assets.plan import estimate
    from qup_assets.storage.tables import report_dir, table_path
    from qup_assets.study import load_study

    info = json.loads(table_path(micro_study.store, "base_model", "micro-qwen").with_suffix(".json").read_text())
    model = AutoModelForCausalLM.from_pretrained(micro_study.store / info["store_path"])
    assert info["lineage"] == "qwen2" and info["parameters"] == model.num_parameters()
    rows = dict(estimate(load_study(micro_study.study), micro_study.store))
    assert rows["family micro-qwen"] == f"qwen2, {format_params(info['parameters'])} parameters (from the model folder)"
    sizes = pd.read_csv(report_dir(micro_study.store) / "sizes.csv")
    assert set(sizes["parameters"]) == {info["parameters"]} and set(sizes["lineage"]) == {"qwen2"}
