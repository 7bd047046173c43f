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
from typing import Sequence

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


def cached_sample(
    lm: LanguageModel,
    cache: ResponseCache,
    requests: Sequence[Request],
    params: SamplingParams,
    chunk_size: int = 64,
    progress: ProgressFn | None = None,
    label: str = "samples",
) -> list[Completion]:
    """Sample through the cache in fixed chunks: a chunk is served from the cache only when complete.

    Fixed chunk boundaries (independent of what is cached) keep batch composition, and so
    results, identical between an interrupted-and-resumed run and an uninterrupted one.
    """
    keys = [sample_key(lm.fingerprint, r, params) for r in requests]
    out: list[Completion | None] = [None] * len(requests)
    started = time.monotonic()
    generated = 0
    last_report = 0.0
    for lo in range(0, len(requests), chunk_size):
        idx = range(lo, min(lo + chunk_size, len(requests)))
        hit = [cache.get(keys[i]) for i in idx]
        if all(h is not None for h in hit):
            for i, h in zip(idx, hit):
                out[i] = Completion(**h)
            cache.hits += len(hit)
        else:
            comps = lm.sample([requests[i] for i in idx], params)
            cache.put_many([(keys[i], c.__dict__) for i, c in zip(idx, comps)])
            for i, c in zip(idx, comps):
                out[i] = c
            cache.misses += len(comps)
            generated += len(comps)
        now = time.monotonic()
        done = idx.stop
        if progress and (now - last_report > 10 or done == len(requests)):
            last_report = now
            rate = generated / max(1e-9, now - started)
            left = len(requests) - done
            eta = f"{left / rate:.0f}s" if rate > 0 and left else "-"
            progress(
                f"{label}: {done}/{len(requests)} ({100 * done / max(1, len(requests)):.0f}%), "
                f"{rate:.1f} generated/s, ETA {eta}, cache hits {cache.hits}"
            )
    return out  # type: ignore[return-value]
