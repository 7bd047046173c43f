"""Exemplar-level analysis: every trace's facts across variants in one table (asset and DuckDB view), the
problems where reward and perplexity disagree most, shown side by side with their highest-loss tokens."""

import numpy as np
import pandas as pd
import pytest

from qup_assets.report.exemplars import disagreements, readable, reward_column, within_variant_correlations
from qup_assets.report.render import Report
from qup_assets.report.sections import exemplars_html


def test_byte_level_tokens_read_as_the_text_they_stand_for(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = "Step 1: 12 + 30 = 42.\nThe answer is \\boxed{42}. é"
    pieces = tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"])
    assert "".join(readable(pieces)) == text
    assert readable(["▁The", "▁answer"]) == [" The", " answer"]  # SentencePiece


def _ex(rows):
    return pd.DataFrame(rows, columns=["model_family", "problem_id", "variant", "n_steps", "reward", "ppl",
                                       "completion", "tokens", "token_nll"])


def test_the_disagreements_are_the_problems_where_reward_and_ppl_both_rise_most():
    rows = []
    for i in range(20):
        gain, rise = (i % 5) / 4, (i % 4) / 3 - 0.3  # some problems gain reward and lose PPL, or the other way
        rows += [("f", f"p{i}", "native", 2, 0.0, 1.5, "a", ["a"], [0.1]),
                 ("f", f"p{i}", "oracle_refined", 2, gain, 1.5 + rise, "b", ["b"], [0.2])]
    d = disagreements(_ex(rows), n=3)
    assert len(d) == 3 and (d["reward_gain"] > 0).all() and (d["ppl_rise"] > 0).all()
    assert d.iloc[0]["reward_gain"] == 1.0 and d.iloc[0]["ppl_rise"] == pytest.approx(0.7)  # the largest of both
    assert set(d.columns) >= {"text_native", "text_oracle_refined", "tokens_native"}


def test_within_variant_correlation_of_reward_and_ppl_has_an_interval():
    rng = np.random.default_rng(0)
    r = rng.normal(size=200)
    ex = pd.DataFrame({"model_family": "f", "variant": "native", "reward": r, "ppl": 2 - 0.5 * r + rng.normal(0, 0.1, 200)})
    w = within_variant_correlations(ex, 200, 0).iloc[0]
    assert w["rho"] < -0.9 and w["ci_high"] < -0.85 and w["n_traces"] == 200
    assert reward_column("Skywork/Skywork-Reward-V2-Llama-3.1-8B") == "reward_skywork_skywork_reward_v2_llama_3_1_8b"


def test_highlighted_exemplars_escape_model_text_and_mark_the_highest_loss_tokens():
    toks = ["<script>", "alert(1)", "</script>", " ok"] + [f" t{i}" for i in range(12)]
    nll = [9.0, 8.0, 7.0, 0.1] + [0.01 * i for i in range(12)]  # mean 1.5
    d = pd.DataFrame([{"model_family": "f", "problem_id": "p<1>", "reward_native": 0.1, "reward_oracle_refined": 0.9,
                       "ppl_native": 1.2, "ppl_oracle_refined": 2.5, "tokens_native": toks, "token_nll_native": nll,
                       "tokens_oracle_refined": toks, "token_nll_oracle_refined": nll}])
    rep = Report("u", "", True, ["sft"], ["rm"], 4, *[pd.DataFrame()] * 5, [], [], disagreements=d)
    page = exemplars_html(rep)
    assert "<script>" not in page and "&lt;script&gt;" in page and "p&lt;1&gt;" in page
    assert page.count('<mark title="NLL 9.00">&lt;script&gt;</mark>') == 2
    assert page.count("<mark") == 2 * 3  # of each trace's eight highest-loss tokens, those above its mean loss


@pytest.mark.slow
def test_the_exemplars_table_joins_every_variants_traces_and_the_report_reads_it(micro_study):
    from qup_assets import variants
    from qup_assets.storage.catalog import query
    from qup_assets.storage.tables import read_table, report_dir

    ex = query(micro_study.store, "select * from exemplars")
    common = read_table(micro_study.store, "common_problems", ["micro-qwen"])
    n_common = int(common["common"].sum())
    assert ex.groupby("variant").size().to_dict() == {v: n_common for v in variants.names()}
    assert {"reward", "reward_synthetic_rm", "reward_process_rm", "ppl_q1", "ppl_q4", "semantic_preservation", "edit_distance",
            "n_steps", "source", "completion"} <= set(ex.columns)
    for v in ("native", "oracle_refined", "compat_selected"):
        mine = ex[ex["variant"] == v].set_index("problem_id")
        a = read_table(micro_study.store, f"{v}_adaptation", ["micro-qwen"]).set_index("problem_id")
        r = read_table(micro_study.store, f"{v}_rewards", ["micro-qwen"])
        r = r[r["reward_model"] == "synthetic-rm"].set_index("problem_id")
        assert mine["ppl"].to_dict() == pytest.approx(a.loc[mine.index, "ppl"].to_dict())
        assert mine["reward_synthetic_rm"].to_dict() == pytest.approx(r.loc[mine.index, "score"].to_dict())
        # each token's loss adds up to the trace's NLL
        assert [float(np.sum(t)) for t in mine["token_nll"]] == pytest.approx(list(mine["nll"]), rel=1e-5)
    native = ex[ex["variant"] == "native"]
    assert (native["edit_distance"] == 0).all() and (native["semantic_preservation"] == 1).all()
    md = (report_dir(micro_study.store) / "report.md").read_text()
    assert "## Exemplars: the paradox trace by trace" in md and "Compat-Selected" in md
    assert "## The paradox by size" in md and "micro-qwen" in md
    html = (report_dir(micro_study.store) / "report.html").read_text()
    # The side by side shows every problem whose Oracle-Refined trace gained reward AND rose in perplexity,
    # counted here from the table itself; micro has such problems, so the section must be there.
    both = ex.pivot_table(index=["model_family", "problem_id"], columns="variant", values=["reward", "ppl"])
    rising = ((both[("reward", "oracle_refined")] > both[("reward", "native")])
              & (both[("ppl", "oracle_refined")] > both[("ppl", "native")])).sum()
    assert rising > 0
    assert "SLM-RFT (left) and Oracle-Refined (right)" in html and "Where reward and perplexity" in md
    assert html.count("<td colspan=2><b>") == min(10, rising)
