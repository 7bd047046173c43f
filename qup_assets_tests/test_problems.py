"""Problem sources: the synthetic world, local files and HF datasets, with bad rows rejected and counted."""

import json
import shutil

import pandas as pd
import pytest

from qup_assets.common import problem_id
from qup_assets.problems.sources import ProblemSourceError, load_benchmarks, load_problems
from qup_assets.study import (
    FieldMap,
    HFSource,
    LocalSource,
    SyntheticSource,
    load_study,
)
from qup_assets.world.generator import Program, generate

from .helpers import FIXTURES, printed_command_works


def test_synthetic_world_is_deterministic_and_consistent():
    a = generate(50, seed=3, min_steps=2, max_steps=4, max_operand=20)
    b = generate(50, seed=3, min_steps=2, max_steps=4, max_operand=20)
    assert [p.problem for p in a] == [p.problem for p in b]
    assert [p.problem for p in a] != [p.problem for p in generate(50, seed=4)]
    for p in a:
        values = p.program.values()
        assert 2 <= len(p.program.steps) <= 4
        assert all(isinstance(v, int) and v > 0 for v in values)
        assert f"\\boxed{{{p.answer}}}" in p.reference_solution
        assert Program.from_json(p.program.to_json()) == p.program
        assert str(p.program.start) in p.problem


def test_synthetic_pool_has_requested_size_and_columns(verifier):
    ps = load_problems(SyntheticSource(kind="synthetic", size=120, seed=5), verifier)
    assert len(ps.rows) == 120
    assert ps.rows["problem_id"].is_unique
    assert list(ps.rows.columns) == ["problem_id", "problem", "answer", "reference_solution", "program", "n_steps", "source"]
    assert ps.rows["program"].notna().all()


def test_numina_like_file_rejects_bad_rows_with_reasons(verifier):
    src = LocalSource(kind="local", path=str(FIXTURES / "numina_like.jsonl"))
    ps = load_problems(src, verifier)
    kept = dict(zip(ps.rows["problem"], ps.rows["answer"]))
    assert kept["What is $2+3$?"] == "5"
    assert kept["Compute $\\frac{1}{2}+\\frac{1}{4}$."] == "\\frac{3}{4}"
    assert kept["Simplify $\\sqrt{8}$."] == "2\\sqrt{2}"
    assert len(ps.rows) == 5
    assert ps.n_duplicates == 1
    reasons = ps.reject_counts()
    # empty problem, missing field, non-JSON line and JSON list: 4 rows without a problem.
    assert reasons == {"missing_problem": 4, "no_gold_answer": 1, "unusable_gold_answer": 1}
    # nothing lost silently: every raw row is kept, rejected or a counted duplicate.
    assert len(ps.rows) + len(ps.rejected) + ps.n_duplicates == ps.n_raw
    assert all("\udcff" not in p for p in ps.rows["problem"])


def test_math500_like_parquet_with_field_mapping(verifier, tmp_path):
    df = pd.read_json(FIXTURES / "math500_like.jsonl", lines=True)
    path = tmp_path / "m.parquet"
    df.to_parquet(path)
    src = LocalSource(kind="local", path=str(path), fields=FieldMap(problem="problem", solution=None, answer="answer"))
    ps = load_problems(src, verifier)
    assert len(ps.rows) == 4
    assert ps.reject_counts() == {"no_gold_answer": 1}
    assert set(ps.rows["answer"]) == {"6", "\\frac{1}{2}", "(0,1)"}


def test_hf_dataset_from_a_local_folder(verifier, tmp_path):
    """The HF source goes through datasets.load_dataset: a local folder works offline."""
    folder = tmp_path / "numina"
    folder.mkdir()
    shutil.copy(FIXTURES / "math500_like.jsonl", folder / "test.jsonl")
    src = HFSource(kind="hf", name=str(folder), split="test", fields=FieldMap(solution=None, answer="answer"), size=2)
    ps = load_problems(src, verifier)
    assert len(ps.rows) == 2
    assert ps.rows["source"].iloc[0].startswith("hf:")


def test_hf_dataset_not_available_offline_says_what_to_download(verifier, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    src = HFSource(kind="hf", name="no-such-org/no-such-dataset-qup", split="train")
    with pytest.raises(ProblemSourceError, match="hf download --repo-type dataset no-such-org") as err:
        load_problems(src, verifier)
    assert printed_command_works(str(err.value)) == "hf download --repo-type dataset no-such-org/no-such-dataset-qup"


def test_mapping_to_a_missing_column_is_a_clear_error(verifier):
    src = LocalSource(kind="local", path=str(FIXTURES / "math500_like.jsonl"), fields=FieldMap(problem="question"))
    with pytest.raises(ProblemSourceError, match=r"\[.question.\] named in .*available columns: \[.answer., .level., .problem., .solution."):
        load_problems(src, verifier)


def test_nothing_usable_fails_with_counts(verifier, tmp_path):
    path = tmp_path / "garbage.jsonl"
    path.write_bytes(b'{"problem": "x"}\nnot json\n\xff\xfe\n{"problem": null, "solution": "\\\\boxed{1}"}\n')
    with pytest.raises(ProblemSourceError, match="no usable problems remain out of 4 rows"):
        load_problems(LocalSource(kind="local", path=str(path)), verifier)


def test_benchmarks_are_decontaminated_against_the_pool(verifier, tmp_path):
    study_path = tmp_path / "s.yaml"
    study_path.write_text(
        "name: s\nproblems: {kind: synthetic, size: 40, seed: 1, min_steps: 1, max_steps: 1, max_operand: 3}\n"
        "benchmarks:\n"
        "  - {name: same, source: {kind: synthetic, size: 20, seed: 1, min_steps: 1, max_steps: 1, max_operand: 3}}\n"
        "  - {name: other, source: {kind: local, path: " + json.dumps(str(FIXTURES / "math500_like.jsonl")) +
        ", fields: {solution: null, answer: answer}}}\n"
        "families: {f: {student: {kind: synthetic, style: qwen}}}\n"
    )
    study = load_study(str(study_path))
    pool = load_problems(study.problems, verifier, study)
    pool_ids = set(pool.rows["problem_id"])
    # A tiny problem space: most of 'same' collides with the pool and must be dropped.
    sets = load_benchmarks(study, verifier, pool_ids)
    for ps in sets.values():
        assert not set(ps.rows["problem_id"]) & pool_ids
    assert (sets["same"].rejected["reason"].str.startswith("in_problem_pool")).sum() > 0
    assert len(sets["other"].rows) == 4


def test_problem_id_ignores_whitespace_and_case():
    assert problem_id("What is  2+3?") == problem_id("what is 2+3? ")



# ---------------------------------------------------------------- the paper's datasets, in their real schemas
# Each fixture is a few hand-written rows with the public dataset's own columns; the study's HF sources are
# pointed at a local folder holding it, so rows go through datasets.load_dataset -> to_pandas (list columns
# arrive as numpy arrays) and the field maps paper.yaml gives each benchmark.

PAPER_FIXTURES = {"math500": "math500.jsonl", "minerva-math": "minerva.jsonl", "aime24": "aime24.jsonl",
                  "amc23": "amc23.jsonl", "olympiadbench": "olympiadbench.jsonl"}
NO_GOLD = "no_gold_answer: no answer field and no \\boxed{} in the solution"


def _paper_on_fixtures(folder):
    """paper.yaml with each dataset name replaced by a local folder holding its fixture (kind, split, fields kept)."""
    paper = load_study("paper")

    def local(src, fixture):
        d = folder / fixture.removesuffix(".jsonl")
        d.mkdir()
        shutil.copy(FIXTURES / fixture, d / f"{src.split}.jsonl")
        return src.model_copy(update={"name": str(d)})

    benchmarks = [b.model_copy(update={"source": local(b.source, PAPER_FIXTURES[b.name])}) for b in paper.benchmarks]
    return paper.model_copy(update={"benchmarks": benchmarks, "problems": local(paper.problems, "numina_cot.jsonl")})


@pytest.fixture(scope="module")
def paper_sets(tmp_path_factory, verifier):
    study = _paper_on_fixtures(tmp_path_factory.mktemp("paper"))
    pool = load_problems(study.problems, verifier, study)
    return pool, load_benchmarks(study, verifier, set(pool.rows["problem_id"]))


PAPER_GOLD = {
    "math500": ["\\left( 3, \\frac{\\pi}{2} \\right)", "(2,12) \\cup (12,102)", "2", "30^\\circ", "\\$10.40", "20\\%",
                "\\dfrac{1}{9}", "16\\sqrt{3}", "1,-2", "\\text{Evelyn}",
                "2\\sqrt{5}"],  # the last row has a null answer: recovered from the solution's \boxed{}
    # e-notation is written as LaTeX: math-verify would read 4.4e7 as 4.4*e*7
    "minerva-math": ["1.6", "4.4 \\times 10^{7}", "7.25 \\times 10^{-11}", "\\frac{1}{I s+2 B}", "100", "\\frac{1}{20}",
                     "\\frac{c}{x^{2}}-\\frac{\\cos (2 x)}{2 x^{2}}", "1.30"],
    "aime24": ["204", "540", "809", "116", "033", "104"],  # the answer is the \boxed{} of the `solution` column
    "amc23": ["27", "4", "8", "18", "1", "5"],  # a float column (27.0) in the real dataset
    # final_answer is a list: one item, or several joined; never "['$5$']"
    "olympiadbench": ["5", "(0,2),(0,-2),(4,23),(4,-23)", "1, 3, 9, 11", "\\frac{\\log 2}{\\log 2-\\log 3}",
                      "(-\\infty,-2] \\cup[2,5]", "2 n-1", "15"],
}


def test_paper_benchmarks_load_from_their_real_schemas(paper_sets):
    _, sets = paper_sets
    assert sorted(sets) == sorted(PAPER_FIXTURES)
    for name, ps in sets.items():
        assert list(ps.rows["answer"]) == PAPER_GOLD[name], name
        assert len(ps.rows) + len(ps.rejected) + ps.n_duplicates == ps.n_raw, name
        assert (ps.rows["benchmark"] == name).all() and ps.rows["problem"].str.len().gt(20).all(), name
    assert {n: ps.reject_counts() for n, ps in sets.items()} == {
        "math500": {}, "minerva-math": {}, "aime24": {}, "amc23": {}, "olympiadbench": {"no_gold_answer": 1}}
    # paper.yaml maps no solution for olympiadbench, so its row with a null final_answer has no gold answer
    rej = sets["olympiadbench"].rejected
    assert list(zip(rej["row"], rej["reason"])) == [(7, NO_GOLD)]
    assert rej["problem_preview"].iloc[0].startswith("Compute the number of positive divisors")
    math500 = sets["math500"].rows
    assert math500["reference_solution"].iloc[0].startswith("We have that $r = \\sqrt{0^2 + 3^2} = 3.$")


def test_olympiadbench_list_solutions_give_a_null_final_answer_its_boxed_answer(verifier, tmp_path):
    """With the solution column mapped, OlympiadBench's list-valued solutions are joined, never dropped or str()'d."""
    (tmp_path / "ob").mkdir()
    shutil.copy(FIXTURES / "olympiadbench.jsonl", tmp_path / "ob" / "test.jsonl")
    src = HFSource(kind="hf", name=str(tmp_path / "ob"), split="test",
                   fields=FieldMap(problem="question", solution="solution", answer="final_answer"))
    ps = load_problems(src, verifier)
    assert ps.rejected.empty
    assert list(ps.rows["answer"]) == PAPER_GOLD["olympiadbench"] + ["8"]
    sols = ps.rows["reference_solution"]
    assert sols.iloc[-1] == "The number of divisors is $(3+1)(1+1)$, so the answer is $\\boxed{8}$."
    assert not sols.str.startswith("[").any()


NUMINA_GOLD = [
    "5\\text{ cm}",  # units stay in the gold; the verifier accepts a bare 5 (below)
    "\\$12.50",
    "(-\\infty, -1] \\cup [3, +\\infty)",
    "\\dfrac{n}{2n+1}",  # two \boxed{} in the solution: the last one is the answer
    "60^\\circ",
    "25\\%",
    "16\\pi",
    "1200",  # \boxed{1,200}
    "B",
]


def test_numinamath_pool_in_its_real_schema(paper_sets):
    pool, _ = paper_sets
    assert list(pool.rows["answer"]) == NUMINA_GOLD
    assert list(zip(pool.rejected["row"], pool.rejected["reason"])) == [(9, NO_GOLD)]  # a proof, no \boxed{}
    assert pool.n_raw == 10 and pool.n_duplicates == 0
    assert pool.notes == ["asked for 100000 problems, only 9 usable"]
    assert pool.rows["reference_solution"].str.contains("\\boxed{", regex=False).all()


# (gold, the answer as a model writes it in \boxed{}, verdict). "wrong" rows show the gold really parses:
# a gold that math-verify cannot parse is "rejected", not "wrong".
MODEL_ANSWERS = [
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi/2)", "correct"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi)", "wrong"),
    ("(2,12) \\cup (12,102)", "(2, 12) \\cup (12, 102)", "correct"),
    ("30^\\circ", "30", "correct"),
    ("\\$10.40", "10.4", "correct"),
    ("20\\%", "20", "correct"),
    ("\\dfrac{1}{9}", "\\frac19", "correct"),
    ("\\dfrac{1}{9}", "\\frac{1}{8}", "wrong"),
    ("1,-2", "-2, 1", "correct"),
    ("2\\sqrt{5}", "\\sqrt{20}", "correct"),
    ("4.4 \\times 10^{7}", "4.4\\times10^7", "correct"),
    ("4.4 \\times 10^{7}", "44000000", "correct"),
    ("7.25 \\times 10^{-11}", "7.3 \\times 10^{-11}", "wrong"),
    ("033", "33", "correct"),
    ("27", "27.0", "correct"),
    ("27", "28", "wrong"),
    ("1, 3, 9, 11", "11, 9, 3, 1", "correct"),
    ("1, 3, 9, 11", "1, 3, 9", "wrong"),
    ("(0,2),(0,-2),(4,23),(4,-23)", "(4,23),(4,-23),(0,2),(0,-2)", "correct"),
    ("(-\\infty,-2] \\cup[2,5]", "(-\\infty, -2] \\cup [2, 5]", "correct"),
    ("(-\\infty,-2] \\cup[2,5]", "(-\\infty, -2) \\cup (2, 5)", "wrong"),
    ("2 n-1", "2n-1", "correct"),
    ("5\\text{ cm}", "5", "correct"),
    ("5\\text{ cm}", "6", "wrong"),
    ("\\$12.50", "12.5", "correct"),
    ("(-\\infty, -1] \\cup [3, +\\infty)", "(-\\infty,-1]\\cup[3,\\infty)", "correct"),
    ("\\dfrac{n}{2n+1}", "\\frac{n}{2n+1}", "correct"),
    ("60^\\circ", "60", "correct"),
    ("25\\%", "25", "correct"),
    ("16\\pi", "8\\pi", "wrong"),
]


def test_gold_answers_grade_answers_written_as_a_model_would(paper_sets, verifier):
    pool, sets = paper_sets
    golds = list(pool.rows["answer"]) + [a for ps in sets.values() for a in ps.rows["answer"]]
    assert len(golds) == 9 + 11 + 8 + 6 + 6 + 7
    echoed = verifier.verify_many([(g, f"Therefore, the final answer is $\\boxed{{{g}}}$.") for g in golds])
    assert [r.verdict for r in echoed] == ["correct"] * len(golds), [(g, r.reason) for g, r in zip(golds, echoed)]
    assert all(gold in golds for gold, _, _ in MODEL_ANSWERS)
    results = verifier.verify_many([(g, f"So the answer is \\boxed{{{m}}}.") for g, m, _ in MODEL_ANSWERS])
    got = [(g, m, r.verdict) for (g, m, _), r in zip(MODEL_ANSWERS, results)]
    assert got == MODEL_ANSWERS


def test_math500_like_loads_with_the_paper_field_map(verifier):
    fields = next(b.source.fields for b in load_study("paper").benchmarks if b.name == "math500")
    ps = load_problems(LocalSource(kind="local", path=str(FIXTURES / "math500_like.jsonl"), fields=fields), verifier)
    assert list(ps.rows["answer"]) == ["6", "6", "\\frac{1}{2}", "(0,1)"]
    assert list(zip(ps.rejected["row"], ps.rejected["reason"])) == [(4, NO_GOLD)]
    assert ps.rows["reference_solution"].str.contains("\\boxed{", regex=False).all()


def test_a_list_valued_gold_is_a_multi_answer_item(verifier):
    """OlympiadBench's final_answer lists: every part is needed, in any order; one part alone is wrong."""
    import numpy as np

    from qup_assets.problems.sources import _gold_answer

    gold = _gold_answer(np.array(["$1$", "$3$"], dtype=object), None)
    assert gold == "1, 3"
    got = verifier.verify_many([(gold, "so \\boxed{3, 1}"), (gold, "so \\boxed{1, 3}"), (gold, "so \\boxed{1}"),
                                (gold, "so \\boxed{1, 3, 5}")])
    assert [r.correct for r in got] == [True, True, False, False]


def test_a_gold_is_parsed_on_its_own_and_code_like_or_unparsable_golds_are_rejected(verifier, tmp_path):
    rows = [{"problem": "What is 1+1?", "answer": "2"},
            {"problem": "Poisoned row", "answer": "__import__('os').system('id')"},
            {"problem": "Broken row", "answer": "}{"},
            {"problem": "Decimal comma", "answer": "0,111"},
            {"problem": "Two boxes", "answer": None, "solution": "so $\\boxed{1}\\boxed{2}$"}]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps({"solution": None, **r}) for r in rows))
    fields = FieldMap(answer="answer")
    ps = load_problems(LocalSource(kind="local", path=str(path), fields=fields), verifier)
    assert dict(zip(ps.rows["problem"], ps.rows["answer"])) == {"What is 1+1?": "2", "Decimal comma": "0.111",
                                                                 "Two boxes": "1, 2"}
    reasons = dict(zip(ps.rejected["problem_preview"], ps.rejected["reason"]))
    assert reasons["Poisoned row"].startswith("unusable_gold_answer: gold looks like code")
    assert reasons["Broken row"] == "unusable_gold_answer: gold answer could not be parsed"


def test_changed_golds_counts_problems_whose_gold_moved():
    from qup_assets.problems.sources import changed_golds

    before = pd.DataFrame({"problem_id": ["a", "b", "c"], "answer": ["1", "0111", "2"]})
    after = pd.DataFrame({"problem_id": ["a", "b", "d"], "answer": ["1", "0.111", "5"]})
    assert changed_golds(before, after) == 1  # b moved; c left, d is new: not changes of a gold
    assert changed_golds(None, after) == 0
