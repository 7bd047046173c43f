"""Rejection sampling's selection rules, independent of any model."""

import pandas as pd

from qup_assets.sampling.native import clean_trace, sampling_summary, select_traces


def test_clean_trace_rules():
    raw = "Step 1: $ 2 + 3 = 5 $  \r\nThe final answer is $\\boxed{5}$.\nStep 9: rambling after the answer\x07\n\n"
    assert clean_trace(raw) == "Step 1: $ 2 + 3 = 5 $\nThe final answer is $\\boxed{5}$."
    assert clean_trace("We have 2 + 3 = 5.\nThe answer is 5.\nThe answer is 5.") == "We have 2 + 3 = 5.\nThe answer is 5.\nThe answer is 5."
    assert clean_trace("no marker at all  \n") == "no marker at all"


def _samples():
    rows = []
    for pid, answers in [("p1", ["5", "4", "5", "5"]), ("p2", ["1", "1", "1", "1"]), ("p3", ["9", "8", "9", "2"])]:
        gold = {"p1": "5", "p2": "7", "p3": "9"}[pid]
        for i, a in enumerate(answers):
            rows.append({"model_family": "f", "problem_id": pid, "sample_idx": i,
                         "completion": f"Work {i}\nThe answer is {a}.\ntrailing noise", "correct": a == gold,
                         "verdict": "correct" if a == gold else "wrong", "n_tokens": 10 + i, "finish_reason": "stop"})
    problems = pd.DataFrame({"problem_id": ["p1", "p2", "p3"], "answer": ["5", "7", "9"], "problem": ["a", "b", "c"]})
    return pd.DataFrame(rows), problems


def test_one_correct_trace_per_solvable_problem_chosen_by_seed(verifier):
    samples, problems = _samples()
    prompts = {"p1": "P1", "p3": "P3"}
    traces, stats = select_traces(samples, problems, prompts, seed=0, verifier=verifier)
    assert list(traces["problem_id"]) == ["p1", "p3"]
    assert traces["completion"].str.endswith(".").all() and not traces["completion"].str.contains("noise").any()
    assert stats["cleaned_changed"] == 2
    picks = {seed: tuple(select_traces(samples, problems, prompts, seed, verifier)[0]["sample_idx"]) for seed in range(8)}
    assert picks[0] == tuple(select_traces(samples, problems, prompts, 0, verifier)[0]["sample_idx"])
    assert len(set(picks.values())) > 1  # the seed, not the position, decides


def test_a_correct_answer_in_a_sample_cut_at_max_tokens_is_never_a_trace(verifier):
    """A sample that hit max_tokens had not stopped, whatever it wrote before the cut: p3's only uncut correct
    sample is its trace, and p1, whose correct samples were all cut, has none; both counted."""
    samples, problems = _samples()
    cut = (samples["problem_id"] == "p1") | ((samples["problem_id"] == "p3") & (samples["sample_idx"] == 2))
    samples.loc[cut, "finish_reason"] = "length"
    traces, stats = select_traces(samples, problems, {"p1": "P1", "p3": "P3"}, seed=0, verifier=verifier)
    assert list(traces["problem_id"]) == ["p3"] and list(traces["sample_idx"]) == [0]
    assert stats["cut_at_max_tokens"] == 3 + 1


def test_sampling_summary():
    samples, _ = _samples()
    s = sampling_summary(samples, 4)
    assert s["pass@1"] == 5 / 12 and s["pass@4"] == 2 / 3 and s["solvable_problems"] == 2


def test_native_check_sees_all_families_and_allows_shared_problems(tmp_path):
    """The check loads every materialized family: the same problem in two families is not a duplicate."""
    from qup_assets.assets.resources import StudyResource
    from qup_assets.assets.students import native_traces_verify
    from qup_assets.study import resolve_study_path

    study = StudyResource(study=str(resolve_study_path("micro")), store_dir=str(tmp_path / "studies" / "micro"),
                          store_root=str(tmp_path))
    rows = pd.DataFrame({"model_family": ["a", "b"], "problem_id": ["p1", "p1"], "answer": ["5", "5"],
                         "completion": ["so \\boxed{5}", "The answer is 5."]})
    assert native_traces_verify(study=study, native_traces=rows).passed
    twice = pd.concat([rows, rows.iloc[:1]])
    assert not native_traces_verify(study=study, native_traces=twice).passed
    wrong = rows.assign(completion=["so \\boxed{4}", "The answer is 5."])
    res = native_traces_verify(study=study, native_traces=wrong)
    assert not res.passed and res.metadata["failing_ids"].value == "a/p1"


def test_no_native_trace_says_what_the_student_wrote_instead():
    import pandas as pd

    from qup_assets.sampling.native import no_traces_message

    cut = pd.DataFrame({"verdict": ["no_answer"] * 6 + ["wrong"] * 2, "correct": False,
                        "finish_reason": ["length"] * 6 + ["stop"] * 2})
    msg = no_traces_message("fam", cut)
    assert msg.startswith("native_samples[fam]: 0 of 8 samples verified correct (6 x no_answer, 2 x wrong), so no "
                          "native trace; most samples give no final answer")
    assert "\\boxed{}" in msg and "(75% were cut off)" in msg
    weak = cut.assign(verdict="wrong", finish_reason="stop")
    assert "the student is too weak for this pool" in no_traces_message("fam", weak)
