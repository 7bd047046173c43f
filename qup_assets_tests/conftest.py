"""Shared fixtures: an isolated store and Dagster home per test, one verifier pool per session, and the
micro study materialized once per test run (shared by the `pytest -n 2` workers; `make test`)."""

import os
from pathlib import Path

import pytest

from qup_assets.mathcore.verify import VerifierPool


def pytest_configure(config):
    """Under pytest-xdist, each worker runs on one core, or its share of them (and so does every process it
    starts: run workers, daemons, servers), so torch in several workers never oversubscribes the machine."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if worker and count and hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        n, count = int(worker.removeprefix("gw")), int(count)
        os.sched_setaffinity(0, cores[n::count] if count <= len(cores) else [cores[n % len(cores)]])


# The order that keeps two xdist workers busy (`make test`: -n <cores> --dist loadgroup --no-loadscope-reorder): one test
# that builds the shared micro study first, the tests that do not need it while it builds, then the tests
# that do; within each, the longest first (seconds from CI's --durations, 2026-12-05, mean of ce14e1d and 2c976d5), so that what is left for
# the last minutes is short tests on both workers rather than one long test on one (measured: one worker idle for
# the last 67 s when the order went by module).
BUILDS_MICRO = "test_students_e2e.py::test_micro_study_end_to_end_and_cached_rerun"
SECONDS = {
    "test_family_runs_spread_over_two_celery_workers_and_survive_a_killed_worker": 228,
    "test_adding_a_family_materializes_only_its_partition_and_refreshes_the_report": 171,
    "test_a_backfill_launched_from_the_ui_adds_a_family_and_refreshes_the_report": 159,
    "test_two_studies_writing_at_the_same_time": 122,
    "test_missing_pieces_fail_clearly_and_recover_once_fixed": 97,
    "test_micro_study_end_to_end_and_cached_rerun": 90,
    "test_sigkill_during_training_reuses_finished_checkpoints": 69,
    "test_sigkill_during_sampling_resumes_from_finished_work": 64,
    "test_ui_shows_lineage_and_the_report_in_a_browser": 61,
    "test_openai_completions_and_chat": 56,
    "test_sigkill_during_an_oracle_pass_resumes_from_cached_rewrites": 53,
    "test_make_dev_survives_a_killed_run_worker_and_stops_on_ctrl_c": 47,
    "test_checkpoints_asset_trains_on_two_processes_with_accelerate": 44,
    "test_rebuilding_the_micro_student_gives_what_is_shipped": 44,
    "test_llm_oracle_through_a_real_vllm_server_in_the_study": 32,
    "test_a_failing_family_fails_the_parallel_run_and_the_other_family_still_finishes": 26,
    "test_an_empty_common_set_stops_the_run_at_common_problems_with_the_reasons": 23,
    "test_a_student_that_never_gives_an_answer_fails_native_traces_with_what_it_wrote": 22,
    "test_ctrl_c_cancels_the_runs_qup_run_launched": 19,
    "test_the_first_study_run_after_the_second_changes_none_of_its_bytes": 19,
}


def pytest_collection_modifyitems(config, items):
    def rank(item):
        if item.nodeid.endswith(BUILDS_MICRO):
            return (0, 0)
        seconds = -SECONDS.get(item.originalname if hasattr(item, "originalname") else item.name, 0)
        return (1 if "micro_study" not in item.fixturenames else 2, seconds)

    items.sort(key=rank)  # stable: within a rank, the collection's own order


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

        def copy_at_rest(src, dst):
            """The study is read-only after its build, but a test on the other worker may be reading its instance:
            SQLite's -wal/-shm side files of that reader vanish when it closes (empty of writes: nothing is lost)."""
            try:
                return shutil.copy2(src, dst)
            except FileNotFoundError:
                if str(src).endswith(("-wal", "-shm")):
                    return dst
                raise

        shutil.copytree(self.root, dest, copy_function=copy_at_rest)
        other = MicroStudy(dest)
        other.cold_seconds = self.cold_seconds
        return other


def shared_build(tmp_path_factory, name: str, build) -> Path:
    """`build(folder)` once per test run, in a folder every xdist worker sees: the first worker that needs it
    builds it under a file lock, the others wait and reuse it (a build that failed is tried again)."""
    import shutil

    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    root, done = shared / name, shared / f"{name}.built"
    with FileLock(str(shared / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            build(root)
            done.touch()
    return root


@pytest.fixture(scope="session")
def micro_study(tmp_path_factory):
    """micro.yaml run cold once per test run. Every test that changes it (or runs anything on it) works on
    `copy()`: the original is read-only, which is what lets the xdist workers share it."""
    import json
    import time

    from qup_assets.cli import main
    from qup_assets.study import resolve_study_path

    def build(root: Path):
        ms = MicroStudy(root)
        ms.home.mkdir()
        (ms.home / "dagster.yaml").write_text((Path(__file__).parent.parent / "dagster.yaml").read_text())
        ms.study.write_text(resolve_study_path("micro").read_text())
        saved = {k: os.environ.get(k) for k in ("QUP_STORE", "DAGSTER_HOME")}
        os.environ.update(QUP_STORE=str(ms.store_root), DAGSTER_HOME=str(ms.home))
        try:
            t = time.monotonic()
            assert main(["run", "--study", str(ms.study)]) == 0
            (root / "built.json").write_text(json.dumps({"cold_seconds": time.monotonic() - t}))
            from qup_assets_tests.helpers import quiesce

            quiesce(ms.home)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    ms = MicroStudy(shared_build(tmp_path_factory, "micro-study", build))
    ms.cold_seconds = json.loads((ms.root / "built.json").read_text())["cold_seconds"]
    return ms


@pytest.fixture(scope="session")
def small_alone(tmp_path_factory):
    """The smaller study (micro_small) run alone in its own store and instance: the reference for every run
    that mixes it with another study or runs it elsewhere. Read-only, like micro_study."""
    from qup_assets_tests.helpers import Place, run_small_alone

    root = shared_build(tmp_path_factory, "small-alone", run_small_alone)
    return root / "micro_small.yaml", Place(root / "place")
