"""The study's health as asset checks: the numbers on small tables (pass, WARN, ERROR, nothing to measure), the
Dagster results they become, and the checks in a study's definitions under its key prefix."""

import dagster as dg
import pandas as pd

from qup_assets import variants
from qup_assets.assets import health as checks
from qup_assets.assets.resources import StudyResource
from qup_assets.report import health
from qup_assets.study import resolve_study_path


def _diagnostics(*rows) -> pd.DataFrame:
    return pd.DataFrame([{"model_family": f, "reward_model": rm, "n_correct": 40, "n_wrong": 30,
                          "p_correct_over_wrong": p, "ci_low": p - 0.05, "ci_high": p + 0.05} for f, rm, p in rows])


def test_rm_separation_warns_on_a_weak_or_unmeasured_reward_model_with_value_and_interval():
    good = health.rm_separation(_diagnostics(("f", "orm", 0.8), ("f", "prm", 0.7), ("g", "orm", 0.65)))
    assert good.passed and good.values["f/orm"] == "0.800 [0.750, 0.850]" and good.values["reward_models_below"] == 0
    one_rm = health.rm_separation(_diagnostics(("f", "orm", 0.9)))  # a study with a single RM
    assert one_rm.passed and list(one_rm.table["state"]) == ["separates"]

    weak = health.rm_separation(_diagnostics(("f", "orm", 0.8), ("g", "prm", 0.4)))
    assert not weak.passed and weak.severity == "WARN"
    assert weak.summary.startswith("g: prm cannot tell") and "0.40 [0.35, 0.45] < 0.6" in weak.summary
    assert "prefers the wrong samples" in weak.summary and "f:" not in weak.summary
    assert weak.values["g/prm"] == "0.400 [0.350, 0.450]" and weak.values["lowest_p"] == 0.4
    assert list(weak.table["state"]) == ["separates", "weak"]

    unmeasured = _diagnostics(("f", "orm", float("nan")))
    res = health.rm_separation(unmeasured)
    assert not res.passed and "not measurable" in res.summary and res.values["f/orm"] == "not measurable"

    # a family removed from the study file keeps its rows in the store: left out, named in a note
    removed = health.rm_separation(_diagnostics(("f", "orm", 0.8), ("old", "orm", 0.3)), families=["f"])
    assert removed.passed and "old" in removed.notes[0]
    assert health.rm_separation(_diagnostics(("old", "orm", 0.3)), families=["f"]).passed  # nothing to judge


def _traces(family: str, repaired: list[int], correct: list[bool] | None = None):
    ids = [f"p{i}" for i in range(len(repaired))]
    native = pd.DataFrame({"model_family": family, "problem_id": ids, "completion": "x", "correct": True})
    aligned = pd.DataFrame({"model_family": family, "problem_id": ids, "completion": "y",
                            "correct": correct or [True] * len(ids), "repaired_steps": repaired, "oracle": "o"})
    return native, aligned


def test_wrong_steps_warns_above_a_fifth_of_the_native_traces_per_family():
    n1, a1 = _traces("f", [1, 0, 0, 0, 0])  # 20%: not above
    n2, a2 = _traces("g", [2, 1, 0, 0], correct=[True, True, True, False])  # 2 of 3 measured, 1 left out
    ok = health.wrong_steps({"native": n1, "style_aligned": a1})
    assert ok.passed and ok.values["f/wrong_step_share"] == 0.2
    both = health.wrong_steps({"native": pd.concat([n1, n2]), "style_aligned": pd.concat([a1, a2])})
    assert not both.passed and both.severity == "WARN"
    assert both.summary.startswith("g: 66.7% of the verified-correct native traces") and "f:" not in both.summary
    g = both.table.set_index("family").loc["g"]
    assert (g["with a verified rewrite"], g["with a wrong step"], g["left out"]) == (3, 2, 1)
    # the same count as the report's sentence (report/texts.py)
    from qup_assets.report.texts import wrong_step_lines
    assert "66.7%" in wrong_step_lines({"native": n2, "style_aligned": a2})[0]

    none = health.wrong_steps({"native": n1, "style_aligned": a1.assign(correct=False)})
    assert none.passed and "not measurable" in none.notes[0]
    missing = health.wrong_steps({"native": n1})
    assert missing.passed and "no style_aligned" in missing.summary


def _texts(family: str, texts: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"model_family": family, "problem_id": [f"p{i}" for i in range(len(texts))],
                         "completion": texts})


def test_identical_texts_warn_above_a_tenth_for_pairs_that_should_differ():
    a = [f"a{i}" for i in range(10)]
    one_same = ["a0"] + [f"b{i}" for i in range(1, 10)]  # 10%: not above
    two_same = ["a0", "a1"] + [f"c{i}" for i in range(2, 10)]
    ok = health.identical_texts({"native": _texts("f", a), "oracle_refined": _texts("f", one_same)})
    assert ok.passed and ok.values["highest_share"] == 0.1
    warn = health.identical_texts({"native": _texts("f", a), "oracle_refined": _texts("f", one_same),
                                   "oracle_synthesized": _texts("f", two_same)})
    assert not warn.passed and warn.severity == "WARN" and warn.values["pairs_above"] == 1
    assert warn.summary.splitlines()[0] == ("f: SLM-RFT (native) and Oracle-Synthesized are the very same text on "
                                            "20.0% of the problems both have (2 of 10).")
    assert list(warn.table["share"]) == ["10.0%", "20.0%", "10.0%"]
    # Style-Aligned of a right trace is the trace, and a selected variant copies a candidate: shown, never judged
    same = health.identical_texts({"native": _texts("f", a), "style_aligned": _texts("f", a),
                                   "compat_selected": _texts("f", a), "oracle_refined": _texts("f", one_same)})
    assert same.passed and same.values["highest_share"] == 1.0
    # families outside the report, and a variant with nothing stored, are left out with a note
    other = health.identical_texts({"native": pd.concat([_texts("f", a), _texts("old", a)]),
                                    "oracle_refined": pd.concat([_texts("f", one_same), _texts("old", a)]),
                                    "style_aligned": pd.DataFrame()}, families=["f"])
    assert other.passed and any("old" in n for n in other.notes) and any("style_aligned" in n for n in other.notes)
    alone = health.identical_texts({"native": _texts("f", a)})
    assert alone.passed and "fewer than two variants" in alone.summary


def _differences(half: float) -> pd.DataFrame:
    rows = []
    for fam in ("f", "g"):
        for obj in ("sft", "dft"):
            for a, b in [*health.MAIN_COMPARISONS, ("native", "oracle_synthesized")]:
                width = half if b != "oracle_synthesized" else 0.5  # not a main comparison: never counted
                rows.append({"model_family": fam, "objective": obj, "variant": a, "versus": b, "difference": 0.01,
                             "ci_low": 0.01 - width, "ci_high": 0.01 + width})
    return pd.DataFrame(rows)


def test_interval_widths_warn_when_the_main_comparisons_are_undecided(tmp_path):
    narrow = health.interval_widths(_differences(0.02))
    assert narrow.passed and narrow.values["median_half_width_points"] == 2.0 and narrow.values["intervals"] == 12
    wide = health.interval_widths(_differences(0.03), families=["f"])
    assert not wide.passed and wide.severity == "WARN" and "median half-width 3.0 points > 2.5" in wide.summary
    assert set(wide.table["comparison"]) == {"SLM-RFT (native) vs base model (no fine-tuning)",
                                             "Style-Aligned vs Oracle-Refined", "Style-Aligned vs SLM-RFT (native)"}
    assert set(wide.table["family"]) == {"f"} and "g" in wide.notes[0]
    # a study whose report lacks Style-Aligned judges what it has and names what is missing
    base_only = _differences(0.01).query("versus == 'base'")
    res = health.interval_widths(base_only)
    assert res.passed and "Style-Aligned vs Oracle-Refined" in res.notes[-1]
    assert health.interval_widths(_differences(0.01).query("versus == 'oracle_synthesized'")).passed

    missing = health.interval_widths(health.read_differences(tmp_path / "differences.csv"))
    assert not missing.passed and missing.severity == "ERROR"
    (tmp_path / "differences.csv").write_text(pd.DataFrame().to_csv(index=False))  # a report with no pairs
    assert health.interval_widths(health.read_differences(tmp_path / "differences.csv")).passed


def test_the_checks_return_dagster_results_with_severity_and_metadata(tmp_path):
    study = StudyResource(study=str(resolve_study_path("micro")), store_dir=str(tmp_path / "studies" / "micro"),
                          store_root=str(tmp_path))
    rm_check, wrong_check, identical_check, intervals_check = checks.build_health_checks()
    res = rm_check(study=study, rm_diagnostics=_diagnostics(("micro-qwen", "synthetic-rm", 0.5)))
    assert isinstance(res, dg.AssetCheckResult) and not res.passed
    assert res.severity == dg.AssetCheckSeverity.WARN and "synthetic-rm cannot tell" in res.description
    assert "| micro-qwen | synthetic-rm | 0.5 |" in res.metadata["numbers"].value

    report = study.store / "report"
    report.mkdir(parents=True)
    _differences(0.01).assign(model_family="micro-qwen").to_csv(report / "differences.csv", index=False)
    res = intervals_check(study=study, paradox_report={"families": ["micro-qwen"]})
    assert res.passed and res.severity == dg.AssetCheckSeverity.WARN  # WARN is what a failure would be
    (report / "differences.csv").unlink()
    res = intervals_check(study=study, paradox_report={"families": ["micro-qwen"]})
    assert not res.passed and res.severity == dg.AssetCheckSeverity.ERROR

    # upstream tables come from the store: the report's families' partitions
    native, aligned = _traces("micro-qwen", [1, 1, 0, 0])
    for name, df in (("native_traces", native), ("style_aligned_traces", aligned), ("oracle_refined_traces", native)):
        (study.store / "tables" / name).mkdir(parents=True)
        df.to_parquet(study.store / "tables" / name / "micro-qwen.parquet")
    res = wrong_check(study=study, style_aligned_traces=aligned)
    assert not res.passed and "50.0%" in res.description
    res = identical_check(study=study, paradox_report={"families": ["micro-qwen"]})
    assert not res.passed and "SLM-RFT (native) and Oracle-Refined are the very same text on 100.0%" in res.description
    assert "no traces stored for" in res.metadata["notes"].value


def test_a_registry_without_style_aligned_keeps_the_check_and_passes_it(monkeypatch):
    monkeypatch.setattr(variants, "REGISTRY", [v for v in variants.REGISTRY if v.name != "style_aligned"])
    wrong_check = checks.build_health_checks()[1]
    (spec,) = wrong_check.check_specs
    assert spec.asset_key == dg.AssetKey("native_traces") and spec.name == checks.WRONG_STEPS_CHECK
    res = wrong_check()
    assert res.passed and "no style_aligned" in res.description


def test_micro_definitions_hold_the_checks_under_the_study_prefix_in_the_jobs_qup_run_launches(isolated):
    from qup_assets.definitions import build_definitions

    defs = build_definitions("micro")
    graph = defs.resolve_asset_graph()
    found = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    expected = {("micro/rm_diagnostics", checks.RM_CHECK),
                ("micro/style_aligned_traces", checks.WRONG_STEPS_CHECK),
                ("micro/paradox_report", checks.IDENTICAL_CHECK),
                ("micro/paradox_report", checks.INTERVALS_CHECK)}
    assert expected <= found
    for key in graph.asset_check_keys:
        if key.name in {c for _, c in expected}:
            spec = graph.get_check_spec(key)
            assert spec.description and len(spec.description) > 80 and not spec.blocking, key
            assert not spec.additional_deps, key  # unprefixed extra deps would name no asset of the study
    # each runs with the asset it checks: the family job and the report job (qup run's waves)
    nodes = {j: set(defs.resolve_job_def(j).graph.node_names()) for j in ("family_assets", "paradox_report_job")}
    assert {f"rm_diagnostics_{checks.RM_CHECK}",
            f"style_aligned_traces_{checks.WRONG_STEPS_CHECK}"} <= nodes["family_assets"]
    assert {f"paradox_report_{checks.IDENTICAL_CHECK}",
            f"paradox_report_{checks.INTERVALS_CHECK}"} <= nodes["paradox_report_job"]
