"""Content-addressed response cache, written in append-only shards as batches finish.

Key = hash(model fingerprint, prompt, sampling params, seed, sample index). Each
writer process appends to its own shard file (no locks, no shared writes), one JSON
line per response, flushed and fsynced per batch. A run killed halfway leaves at
most one truncated last line, which is skipped on load; everything before it is
reused. A changed model or parameter changes the key, so it misses.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Callable, Sequence

from qup_assets.backends.base import Completion, LanguageModel, ProgressFn, Request, SamplingParams, stable_hash


class ResponseCache:
    def __init__(self, root: Path, namespace: str):
        self.dir = Path(root) / namespace
        self.dir.mkdir(parents=True, exist_ok=True)
        self._mem: dict[str, dict] = {}
        self._shard = None
        self.corrupt_lines = 0
        self.hits = 0
        self.misses = 0
        for shard in sorted(self.dir.glob("shard-*.jsonl")):
            with shard.open("rb") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                        self._mem[rec["k"]] = rec["v"]
                    except (ValueError, KeyError, TypeError):
                        self.corrupt_lines += 1

    def __len__(self) -> int:
        return len(self._mem)

    def get(self, key: str) -> dict | None:
        return self._mem.get(key)

    def put_many(self, items: Sequence[tuple[str, dict]]) -> None:
        if not items:
            return
        if self._shard is None:
            self._shard = (self.dir / f"shard-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl").open("ab")
        data = b"".join(json.dumps({"k": k, "v": v}, ensure_ascii=False).encode("utf-8", "surrogatepass") + b"\n" for k, v in items)
        self._shard.write(data)
        self._shard.flush()
        os.fsync(self._shard.fileno())
        for k, v in items:
            self._mem[k] = v

    def close(self) -> None:
        if self._shard is not None:
            self._shard.close()
            self._shard = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def sample_key(fingerprint: str, request: Request, params: SamplingParams) -> str:
    return stable_hash("sample", fingerprint, request.prompt, params.key(), request.sample_idx)


def cached_chunks(
    cache: ResponseCache,
    keys: Sequence[str],
    compute: Callable[[list[int]], list],
    encode: Callable[[object], dict],
    decode: Callable[[dict], object],
    chunk_size: int = 64,
    progress: ProgressFn | None = None,
    label: str = "items",
) -> list:
    """Values for `keys` through the cache, computed in fixed chunks of positions by `compute`.

    A chunk is served from the cache only when all of it is cached, otherwise it is computed
    whole. Fixed chunk boundaries (independent of what is cached) keep batch composition, and so
    results, identical between an interrupted-and-resumed run and an uninterrupted one.
    """
    out: list = [None] * len(keys)
    started = time.monotonic()
    computed = 0
    last_report = 0.0
    for lo in range(0, len(keys), chunk_size):
        idx = list(range(lo, min(lo + chunk_size, len(keys))))
        hit = [cache.get(keys[i]) for i in idx]
        if all(h is not None for h in hit):
            for i, h in zip(idx, hit):
                out[i] = decode(h)
            cache.hits += len(hit)
        else:
            values = compute(idx)
            cache.put_many([(keys[i], encode(v)) for i, v in zip(idx, values)])
            for i, v in zip(idx, values):
                out[i] = v
            cache.misses += len(values)
            computed += len(values)
        now = time.monotonic()
        done = idx[-1] + 1
        if progress and (now - last_report > 10 or done == len(keys)):
            last_report = now
            rate = computed / max(1e-9, now - started)
            left = len(keys) - done
            eta = f"{left / rate:.0f}s" if rate > 0 and left else "-"
            progress(f"{label}: {done}/{len(keys)} ({100 * done / max(1, len(keys)):.0f}%), "
                     f"{rate:.1f} computed/s, ETA {eta}, cache hits {cache.hits}")
    return out


def cached_sample(
    lm: LanguageModel,
    cache: ResponseCache,
    requests: Sequence[Request],
    params: SamplingParams,
    chunk_size: int = 64,
    progress: ProgressFn | None = None,
    label: str = "samples",
) -> list[Completion]:
    """Samples through the cache (see cached_chunks for why chunks are fixed)."""
    keys = [sample_key(lm.fingerprint, r, params) for r in requests]
    return cached_chunks(cache, keys, lambda idx: lm.sample([requests[i] for i in idx], params),
                         encode=lambda c: c.__dict__, decode=lambda h: Completion(**h), chunk_size=chunk_size,
                         progress=progress, label=label)
