"""Shared fixtures: an isolated store and Dagster home per test, and one verifier pool per session."""

from pathlib import Path

import pytest

from qup_assets.mathcore.verify import VerifierPool

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def verifier():
    with VerifierPool(workers=2, timeout=3.0) as pool:
        yield pool


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """QUP_STORE and DAGSTER_HOME in a temp folder, so tests never touch the user's data."""
    store, home = tmp_path / "store", tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((Path(__file__).parent.parent / "dagster.yaml").read_text())
    monkeypatch.setenv("QUP_STORE", str(store))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return tmp_path


def write_study(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, verifier):
    """A real HF model folder from the synthetic recipe: tiny and briefly trained (seconds)."""
    from qup_assets.study import SyntheticStudent
    from qup_assets.world.student import build_synthetic_student

    spec = SyntheticStudent(kind="synthetic", architecture="qwen2", style="qwen", hidden_size=32, num_layers=1,
                            pretrain_problems=200, pretrain_steps=30, pretrain_batch_size=16)
    out = tmp_path_factory.mktemp("models") / "tiny"
    knobs = {"min_steps": 1, "max_steps": 2, "max_operand": 9}
    build_synthetic_student(spec, "test-fam", knobs, out, set(), verifier, log=lambda m: None, heldout=10)
    return out
