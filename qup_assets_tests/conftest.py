"""Shared fixtures: an isolated store and Dagster home per test, and one verifier pool per session."""

from pathlib import Path

import pytest

from qup_assets.mathcore.verify import VerifierPool


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


class MicroStudy:
    """A micro.yaml study materialized end to end once per test session (a real instance and store)."""

    def __init__(self, root: Path):
        self.root = root
        self.store_root = root / "store"  # QUP_STORE
        self.store = self.store_root / "studies" / "micro"  # the study's own folder in it
        self.home = root / "dagster_home"
        self.study = root / "micro.yaml"
        self.cold_seconds = 0.0

    def env(self, monkeypatch) -> "MicroStudy":
        monkeypatch.setenv("QUP_STORE", str(self.store_root))
        monkeypatch.setenv("DAGSTER_HOME", str(self.home))
        monkeypatch.setenv("QUP_STUDY", str(self.study))  # qup sql / report default to this study
        return self

    def copy(self, dest: Path) -> "MicroStudy":
        """An independent copy (store, cache, models and the Dagster instance) for tests that change it."""
        import shutil

        shutil.copytree(self.root, dest)
        other = MicroStudy(dest)
        other.cold_seconds = self.cold_seconds
        return other


@pytest.fixture(scope="session")
def micro_study(tmp_path_factory):
    import os
    import time

    from qup_assets.cli import main
    from qup_assets.study import resolve_study_path

    ms = MicroStudy(tmp_path_factory.mktemp("micro"))
    ms.home.mkdir()
    (ms.home / "dagster.yaml").write_text((Path(__file__).parent.parent / "dagster.yaml").read_text())
    ms.study.write_text(resolve_study_path("micro").read_text())
    saved = {k: os.environ.get(k) for k in ("QUP_STORE", "DAGSTER_HOME")}
    os.environ.update(QUP_STORE=str(ms.store_root), DAGSTER_HOME=str(ms.home))
    try:
        t = time.monotonic()
        assert main(["run", "--study", str(ms.study)]) == 0
        ms.cold_seconds = time.monotonic() - t
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return ms
