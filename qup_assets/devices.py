"""Which GPUs of a machine each engine runs on.

On one GPU machine several family runs go at once (dagster.yaml: three), each step of a GPU study in a process
of its own (executor: multiprocess), and the Oracle's `vllm serve` holds GPUs of its own. Without assignment
every engine would see every GPU and ask for 90% of GPU 0. Here a step leases the GPUs its engine needs
(a vLLM engine's tensor-parallel size, a fine-tuning's processes, one for a transformers model) from the
study's `hardware:` minus the Oracle's, all or none, and sets CUDA_VISIBLE_DEVICES to them before CUDA starts
in its process; the engines it starts (vLLM's workers, `accelerate launch`'s ranks) inherit them.

A lease is an exclusive `flock` on one file per GPU (in /dev/shm, which is per machine, and per pod on
Kubernetes), so the kernel frees it when the step's process ends in any way, SIGKILL included: a killed run
never strands a GPU. Plain Python, no Dagster.
"""

from __future__ import annotations

import fcntl
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


class DeviceError(RuntimeError):
    """A GPU request that can never be met on this study's hardware, or one made too late in a process."""


def lock_dir() -> Path:
    """One lock file per GPU, per machine: QUP_GPU_LOCKS, else /dev/shm/qup-gpus (tmp where there is no /dev/shm)."""
    if os.environ.get("QUP_GPU_LOCKS"):
        return Path(os.environ["QUP_GPU_LOCKS"])
    shm = Path("/dev/shm")
    return (shm if shm.is_dir() else Path(tempfile.gettempdir())) / "qup-gpus"


def _cuda_started() -> bool:
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized())


def _try(ids: list[int], n: int, where: Path) -> list[tuple[int, object]]:
    got = []
    for i in ids:
        f = open(where / f"gpu{i}.lock", "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            continue
        got.append((i, f))
        if len(got) == n:
            return got
    for _, f in got:
        f.close()  # all or none: holding some while waiting for the rest could deadlock two steps
    return []


def holders(ids: list[int], where: Path | None = None) -> dict[int, str]:
    """What each leased GPU's holder wrote (its step and pid), for the waiting message."""
    where = where or lock_dir()
    out = {}
    for i in ids:
        try:
            text = (where / f"gpu{i}.lock").read_text().strip()
        except OSError:
            continue
        if text:
            out[i] = text
    return out


def visible_devices(leased: list[int], before: str | None) -> str:
    """CUDA_VISIBLE_DEVICES for GPUs `leased`, numbered as this machine's processes see them: when the machine
    (a container, a scheduler) already narrowed them (CUDA_VISIBLE_DEVICES=4,5,6,7 or GPU UUIDs), index 0 is
    its first entry, not physical GPU 0."""
    if not before:
        return ",".join(map(str, leased))
    seen = [d.strip() for d in before.split(",") if d.strip()]
    if max(leased) >= len(seen):
        raise DeviceError(f"GPU {max(leased)} is leased but CUDA_VISIBLE_DEVICES={before} shows {len(seen)}: "
                          "hardware.gpus_per_node is more than this machine has")
    return ",".join(seen[i] for i in leased)


@contextmanager
def lease(ids: list[int], n: int, holder: str, log: Callable[[str], None] = print, poll: float = 2.0,
          where: Path | None = None) -> Iterator[list[int]]:
    """Hold `n` of the GPUs `ids` (all or none, waiting while others hold them) and make them this process's
    CUDA_VISIBLE_DEVICES until the block ends. n == 0: nothing to lease (a CPU study), nothing changes."""
    if n == 0:
        yield []
        return
    if n > len(ids):
        raise DeviceError(f"{holder} needs {n} GPUs; this study's hardware leaves {len(ids)} ({ids}) to its engines")
    if _cuda_started():
        raise DeviceError(f"{holder}: CUDA already started in this process, so CUDA_VISIBLE_DEVICES cannot assign its "
                          "GPUs: a GPU study runs each step in its own process (executor: multiprocess)")
    where = where or lock_dir()
    where.mkdir(parents=True, exist_ok=True)
    started, said = time.monotonic(), -60.0
    while not (got := _try(ids, n, where)):
        waited = time.monotonic() - started
        if waited - said >= 60:
            busy = "; ".join(f"GPU {i}: {h}" for i, h in holders(ids, where).items())
            log(f"{holder}: waiting for {n} of GPUs {ids} ({busy or 'held'}), {waited:.0f} s so far")
            said = waited
        time.sleep(poll)
    for _, f in got:
        f.seek(0)
        f.truncate()
        f.write(f"{holder} (pid {os.getpid()})\n")
        f.flush()
    leased = [i for i, _ in got]
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = visible_devices(leased, before)
    log(f"{holder}: on GPU {','.join(map(str, leased))} (CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']})")
    try:
        yield leased
    finally:
        if before is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = before
        for _, f in got:
            f.seek(0)
            f.truncate()
            f.close()
