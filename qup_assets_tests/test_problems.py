"""Problem sources: the synthetic world, local files and HF datasets, with bad rows rejected and counted."""

import json
import shutil

import pandas as pd
import pytest

from qup_assets.problems.sources import ProblemSourceError, load_benchmarks, load_problems, problem_id
from qup_assets.study import FieldMap, HFSource, LocalSource, SyntheticSource, load_study
from qup_assets.world.generator import Program, generate

from .conftest import FIXTURES


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
    with pytest.raises(ProblemSourceError, match="huggingface-cli download --repo-type dataset no-such-org"):
        load_problems(src, verifier)


def test_mapping_to_a_missing_column_is_a_clear_error(verifier):
    src = LocalSource(kind="local", path=str(FIXTURES / "math500_like.jsonl"), fields=FieldMap(problem="question"))
    with pytest.raises(ProblemSourceError, match=r"\[.question., .solution.\].*available columns"):
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
