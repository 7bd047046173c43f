"""Shipped synthetic models (world/shipped.py, `qup world`): built once, used only when their recipe matches."""

import json
import shutil
from pathlib import Path

import pytest

from qup_assets.cli import main
from qup_assets.study import SyntheticStudent, load_study
from qup_assets.world import shipped
from qup_assets.world.student import provide_student, student_recipe

from .helpers import small_study_text

REPO_WORLD = Path(__file__).resolve().parents[1] / "data" / "world"
KNOBS = {"min_steps": 1, "max_steps": 2, "max_operand": 9}
SPEC = SyntheticStudent(kind="synthetic", architecture="qwen2", style="qwen", hidden_size=32, num_layers=1,
                        pretrain_problems=200, pretrain_steps=30, pretrain_batch_size=16)


@pytest.mark.parametrize("study", ["micro", "tiny", "micro_small"])
def test_every_shipped_model_matches_the_current_world_code(study, capsys, tmp_path):
    """main never ships a stale world: a change to the world's code or a study's synthetic models fails here
    until `qup world build` is run and its folders committed (for micro and micro_small: `qup world build
    --study` over the texts below, which add the tests' Llama family)."""
    from qup_assets.study import resolve_study_path
    from qup_assets_tests.helpers import small_study_text, with_second_family

    # micro and micro_small with the Llama family the tests add (its students are shipped for both)
    texts = {"micro": lambda: with_second_family(resolve_study_path("micro").read_text()),
             "micro_small": lambda: small_study_text(second_family=True)}
    if study in texts:
        path = tmp_path / f"{study}.yaml"
        path.write_text(texts[study]())
        study = str(path)
    code = main(["world", "status", "--study", study])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.count(": shipped") == len(load_study(study).families) + 1  # every student and the RM


@pytest.fixture
def world(tmp_path, monkeypatch, tiny_model_dir):
    """A world folder holding one shipped student (the session's tiny model) for study `s`, family `fam`."""
    monkeypatch.setenv("QUP_WORLD", str(tmp_path / "world"))
    recipe = student_recipe(SPEC, "fam", KNOBS, {"p-1"})
    shipped.ship("s", "students", "fam", recipe, tiny_model_dir, {"seconds": 1.0, "note": "the build's record"})
    return tmp_path / "world", recipe


def test_a_matching_folder_is_found_with_its_record(world):
    root, recipe = world
    found, why = shipped.find("s", "students", "fam", recipe)
    assert why is None and found.folder == root / "s" / "students" / "fam" / "model"
    assert found.record["note"] == "the build's record" and found.origin.startswith("shipped s/students/fam (recipe ")
    assert shipped.find("other-study", "students", "fam", recipe) == (None, None)  # none shipped


@pytest.mark.parametrize("change, field", [
    (dict(spec=SPEC.model_copy(update={"hidden_size": 64})), "spec.hidden_size: 32 -> 64"),
    (dict(exclude_ids={"p-1", "p-2"}), "excluded_problems"),
    (dict(corpus_knobs={**KNOBS, "max_operand": 20}), "corpus.max_operand: 9 -> 20"),
])
def test_another_recipe_is_not_used_and_the_message_says_what_differs(world, change, field):
    args = dict(spec=SPEC, family="fam", corpus_knobs=KNOBS, exclude_ids={"p-1"}) | change
    found, why = shipped.find("s", "students", "fam", student_recipe(**args))
    assert found is None and field in why and "qup world build --study s" in why


def test_a_change_to_the_worlds_code_is_another_recipe(world, monkeypatch):
    root, recipe = world
    monkeypatch.setattr("qup_assets.world.student.STUDENT_CODE", ("qup_assets.world.generator",))
    found, why = shipped.find("s", "students", "fam", student_recipe(SPEC, "fam", KNOBS, {"p-1"}))
    assert found is None and "world_code" in why


def test_comments_and_docstrings_are_not_code(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    probe = tmp_path / "qup_digest_probe.py"

    def digest(text: str) -> str:
        probe.write_text(text)
        return shipped.code_digest(("qup_digest_probe",))

    before = digest('"""A module."""\ndef f(x):\n    """doc"""\n    # a comment\n    return x + 1\n')
    assert digest('"""Reworded."""\ndef f(x):\n    """other doc"""\n    return x + 1  # another\n') == before
    assert digest('"""A module."""\ndef f(x):\n    """doc"""\n    return x + 2\n') != before


def test_edited_weights_are_not_used(world):
    root, recipe = world
    weights = root / "s" / "students" / "fam" / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    found, why = shipped.find("s", "students", "fam", recipe)
    assert found is None and "not the ones its recipe.json recorded" in why


def test_a_run_copies_a_shipped_student_and_pretrains_when_it_does_not_match(world, tmp_path, verifier):
    root, recipe = world
    logs, warnings = [], []
    record, origin = provide_student("s", "fam", SPEC, KNOBS, {"p-1"}, tmp_path / "a", verifier, logs.append, warnings.append)
    assert origin.startswith("shipped s/students/fam") and record["note"] == "the build's record" and not warnings
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == \
        (root / "s" / "students" / "fam" / "model" / "model.safetensors").read_bytes()

    other = SPEC.model_copy(update={"pretrain_steps": 20})
    record, origin = provide_student("s", "fam", other, KNOBS, {"p-1"}, tmp_path / "b", verifier, logs.append, warnings.append)
    assert origin == "pretrained in this run" and record["steps"] == 20
    assert len(warnings) == 1 and "spec.pretrain_steps: 30 -> 20" in warnings[0]


@pytest.mark.slow
def test_rebuilding_the_micro_student_gives_what_is_shipped(tmp_path, monkeypatch, capsys):
    """`qup world build` from scratch reproduces a shipped student byte for byte (pretraining is seeded and, on
    CPU, the same on any thread count: measured with 1 and 2 threads). The smaller micro study's student (the
    same code as every other, a third of micro's pretraining: 80 s of CI's time became ~30 s)."""
    monkeypatch.setenv("QUP_WORLD", str(tmp_path / "world"))
    study = tmp_path / "micro_small.yaml"
    study.write_text(small_study_text(second_family=True))
    assert main(["world", "build", "--study", str(study), "--only", "micro-qwen", "--jobs", "1"]) == 0
    assert "built in" in capsys.readouterr().out
    ours = tmp_path / "world" / "micro_small" / "students" / "micro-qwen"
    theirs = REPO_WORLD / "micro_small" / "students" / "micro-qwen"
    for f in sorted(p.name for p in (theirs / "model").iterdir()):
        assert (ours / "model" / f).read_bytes() == (theirs / "model" / f).read_bytes(), f
    a, b = (json.loads((d / "recipe.json").read_text()) for d in (ours, theirs))
    assert a["key"] == b["key"] and a["fingerprint"] == b["fingerprint"]
    assert a["record"]["heldout_greedy_accuracy"] == b["record"]["heldout_greedy_accuracy"]
    shutil.rmtree(tmp_path / "world")


def test_the_code_digest_reads_code_the_same_on_every_supported_python():
    """Shipped recipes record a digest of the code's syntax tree. ast.dump differs between Pythons (3.12 adds
    type_params, 3.13 drops empty fields), which made every shipped model "out of date" on 3.12: the digest
    writes trees as 3.11's ast.dump did, on any version (checked on 3.12 and 3.13 by the shipped-models test)."""
    import ast
    import importlib
    import sys

    from qup_assets.world.student import STUDENT_CODE

    for name in STUDENT_CODE:
        tree = ast.parse(Path(importlib.import_module(name).__file__).read_text(encoding="utf-8"))
        if sys.version_info < (3, 12):
            assert shipped._dump(tree) == ast.dump(tree, annotate_fields=False), name
        assert "type_params" not in shipped._dump(tree)
    recipe = json.loads((REPO_WORLD / "micro" / "students" / "micro-qwen" / "recipe.json").read_text())
    assert shipped.code_digest(STUDENT_CODE) == recipe["recipe"]["world_code"]
