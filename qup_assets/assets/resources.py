"""The study as a Dagster resource: which study file, where the store is, the verifier pool."""


import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import dagster as dg
from pydantic import PrivateAttr

from qup_assets.devices import DeviceError, lease
from qup_assets.mathcore.verify import VerifierPool
from qup_assets.storage.namespace import NamespaceError, claim
from qup_assets.study import Family, Study, load_study
from qup_assets.study.gpus import gpus_needed, student_gpus

# Steps that compute on the accelerator (sampling, scoring, training, evaluation). The instance-wide `accelerator`
# pool caps them across runs (one slot per GPU or GPU machine: dagster.yaml); inside one run the
# multiprocess executor runs at most GPU_STEPS_PER_RUN of them at once, because the steps of one run share
# its machine's (its pod's) GPUs.
ACCELERATOR_TAG = "qup/accelerator"
ACCELERATOR_POOL = "accelerator"
ACCELERATOR = {"pool": ACCELERATOR_POOL, "op_tags": {ACCELERATOR_TAG: ACCELERATOR_POOL}}
GPU_STEPS_PER_RUN = 1


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: taskset, a container's or a scheduler's cpuset),
    not the machine's count, which would oversubscribe a process confined to fewer."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity API (macOS)
        return os.cpu_count() or 1


def set_torch_threads(n: int) -> None:
    """torch's intra-op threads in this process. A run that never touches torch (the report, the shared tables)
    does not pay for importing it (about a second a run): until torch is imported, OMP_NUM_THREADS, which
    torch reads when it loads, says the same."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    else:
        os.environ["OMP_NUM_THREADS"] = str(n)


# Added to a run worker's out-of-memory score (of -1000..1000): when memory runs out, the kernel kills the run
# worker, whose run then fails and resumes from the cache, rather than a code server, daemon or webserver of
# `make dev` (a dead code server failed every later launch from the UI until a restart, measured).
RUN_WORKER_OOM_SCORE_ADJ = 800


# The commands that execute one run or one step in a process of their own (`dagster api execute_run`, a run
# pod's or a step's command). A code server starts its run workers as multiprocessing children (argv is the
# server's), and the multiprocess executor its steps likewise; those volunteer too. A run materialized in a
# caller's own process (a notebook, a test's dg.materialize) does not: the caller outlives the run, and what it
# starts later (a code server) would inherit the score.
LAUNCHED_COMMANDS = ("execute_run", "execute_step", "resume_run")


def launched_worker(argv: list[str] | None = None) -> bool:
    """Whether this process was started to execute a run or a step (see LAUNCHED_COMMANDS)."""
    import multiprocessing

    return multiprocessing.parent_process() is not None or bool(set(LAUNCHED_COMMANDS) & set(argv or sys.argv))


def volunteer_to_oom_killer(adj: int = RUN_WORKER_OOM_SCORE_ADJ, argv: list[str] | None = None) -> bool:
    """In a launched run worker or step process: raise its OOM score (Linux; raising needs no privilege, and
    children inherit it). Nothing to do elsewhere, where /proc has no oom_score_adj, or where it is already
    higher. Returns whether this process is one that volunteers."""
    if not launched_worker(argv):
        return False
    path = Path("/proc/self/oom_score_adj")
    try:
        if int(path.read_text()) < adj:
            path.write_text(str(adj))
    except (OSError, ValueError):
        pass
    return True


class StudyResource(dg.ConfigurableResource):
    """`study` is a name under data/studies or a path; `store_dir` is the study's own folder in the store
    (QUP_STORE/studies/<name>), `store_root` is QUP_STORE."""

    study: str
    store_dir: str
    store_root: str
    # Torch threads per run worker. 0: the usable cores / the runs that share them (queued or running
    # when this one starts, at most the instance's max_concurrent_runs), so runs never oversubscribe.
    torch_threads: int = 0
    _study: Study | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._study = None  # read afresh by the run's first step, then shared by its steps
        volunteer_to_oom_killer()
        n = self.threads_for(context.instance)
        set_torch_threads(n)
        context.log.info(f"torch threads: {n} (of {usable_cores()} cores)")

    def threads_for(self, instance) -> int:
        if self.torch_threads > 0:
            return self.torch_threads
        if instance is None:
            return usable_cores()
        queue = getattr(instance.run_coordinator, "get_run_queue_config", None)
        limit = queue().max_concurrent_runs if queue else 1
        # The runs that will share the cores: those queued or running now (this one included), at most the limit.
        live = instance.get_runs_count(dg.RunsFilter(statuses=[
            dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]))
        share = max(1, min(limit if limit > 0 else live, live))
        return max(1, usable_cores() // share)

    def load(self) -> Study:
        """The study file, read once per run (every step of the run sees the same study) and claiming its name
        in the store: a second file with the same name fails here."""
        if self._study is None:
            s = load_study(self.study)
            try:
                claim(Path(self.store_root), s.name, s.source_path)
            except NamespaceError as e:
                raise dg.Failure(description=str(e)) from None
            self._study = s
        return self._study

    @property
    def store(self) -> Path:
        return Path(self.store_dir)

    @property
    def cache_dir(self) -> Path:
        return Path(self.store_dir) / "cache"

    def model_path(self, base_model: dict) -> str:
        """The base model's folder. A synthetic student lives in the store and is found relative to it, so a
        store that was copied or moved still uses its own models; an HF model is where the HF cache put it."""
        rel = base_model.get("store_path")
        return str(self.store / rel) if rel else base_model["path"]

    def family(self, study: Study, name: str) -> Family:
        if name not in study.families:
            raise dg.Failure(
                description=f"model_family {name!r} is not in study {study.name!r} (families: {list(study.families)}); "
                "it was removed from the study file: its data is kept, but it cannot be recomputed."
            )
        return study.families[name]

    @contextmanager
    def gpus(self, context, stage: str, family: str | None = None) -> Iterator[list[int]]:
        """The GPUs this step's engines run on (qup_assets/devices.py: leased, all or none, and made the process's
        CUDA_VISIBLE_DEVICES until the block ends); nothing on a CPU study. `stage`: generate, train, reward,
        oracle or model."""
        s = self.load()
        holder = f"run {context.run_id[:8]} {context.op_def.name}" + (f"[{family}]" if family else "")
        try:
            with lease(student_gpus(s), gpus_needed(s, stage, family), holder, log=context.log.info) as ids:
                yield ids
        except DeviceError as e:
            raise dg.Failure(description=str(e)) from None

    def verifier(self, study: Study | None = None) -> VerifierPool:
        v = (study or self.load()).verification
        return VerifierPool(workers=v.workers, timeout=v.timeout_seconds, max_answer_chars=v.max_answer_chars,
                            answer_formats=v.answer_formats)
