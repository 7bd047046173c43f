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
