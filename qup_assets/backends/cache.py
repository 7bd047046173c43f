"""Content-addressed response cache, written in append-only shards as batches finish.

Key = hash(model fingerprint, prompt, sampling params, seed, sample index). Each
writer process appends to its own shard file (no locks, no shared writes), one JSON
line per response, flushed and fsynced per batch. A run killed halfway leaves at
most one truncated last line, which is skipped on load; everything before it is
reused. A changed model or parameter changes the key, so it misses.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Sequence

from qup_assets.backends.base import Completion, LanguageModel, ProgressFn, Request, SamplingParams
from qup_assets.common import stable_hash

_PREFIX = b'{"k": "'


class ResponseCache:
    """Opening a namespace indexes its shards (key -> shard, offset) without decoding a value: at paper scale
    one namespace holds ~1M responses (GBs as Python objects), and a step reads only the ones it asks for."""

    def __init__(self, root: Path, namespace: str):
        self.dir = Path(root) / namespace
        self.dir.mkdir(parents=True, exist_ok=True)
        self._index: dict[bytes, int] = {}  # 16 bytes of the key's sha256 -> shard number << 40 | line offset
        self._paths: list[Path] = []
        self._also: dict[bytes, list[int]] = {}  # other lines with the same key (a chunk computed twice)
        self._open: OrderedDict[int, object] = OrderedDict()  # a few shards open for reading, least recent out
        self._shard = None
        self._own: int | None = None
        self.corrupt_lines = 0
        self.hits = 0
        self.misses = 0
        for shard in sorted(self.dir.glob("shard-*.jsonl")):
            self._scan(shard)

    def _scan(self, shard: Path) -> None:
        n = len(self._paths)
        self._paths.append(shard)
        offset = 0
        with shard.open("rb") as f:
            for line in f:
                key = _key_of(line)
                if key is None:  # a line cut short by a crash, or not one of ours
                    self.corrupt_lines += 1
                else:
                    d = _digest(key)
                    if d in self._index:
                        self._also.setdefault(d, []).append(self._index[d])
                    self._index[d] = n << 40 | offset
                offset += len(line)

    def _reader(self, n: int):
        f = self._open.pop(n, None) or self._paths[n].open("rb")
        self._open[n] = f
        while len(self._open) > 16:  # every process that wrote left a shard: never one descriptor per shard
            self._open.popitem(last=False)[1].close()
        return f

    def __len__(self) -> int:
        return len(self._index)

    def get(self, key: str) -> dict | None:
        d = _digest(key)
        if d not in self._index:
            return None
        for where in [self._index[d], *reversed(self._also.get(d, []))]:
            f = self._reader(where >> 40)
            f.seek(where & ((1 << 40) - 1))
            try:
                rec = json.loads(f.readline())
                if rec["k"] == key:
                    return rec["v"]
            except (ValueError, KeyError, TypeError):  # damaged in place: try another copy, else a miss
                self.corrupt_lines += 1
        return None

    def put_many(self, items: Sequence[tuple[str, dict]]) -> None:
        if not items:
            return
        if self._shard is None:
            path = self.dir / f"shard-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
            self._shard = path.open("ab")
            self._own = len(self._paths)
            self._paths.append(path)
        offset = self._shard.tell()
        lines = [json.dumps({"k": k, "v": v}, ensure_ascii=False).encode("utf-8", "surrogatepass") + b"\n"
                 for k, v in items]
        self._shard.write(b"".join(lines))
        self._shard.flush()
        os.fsync(self._shard.fileno())
        for (k, _), line in zip(items, lines):
            self._index[_digest(k)] = self._own << 40 | offset
            offset += len(line)

    def close(self) -> None:
        if self._shard is not None:
            self._shard.close()
            self._shard = None
        for f in self._open.values():
            f.close()
        self._open.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()[:16]


def _key_of(line: bytes) -> str | None:
    """The key of one complete shard line, read from its fixed prefix (the value is not decoded)."""
    if not line.endswith(b"\n"):
        return None
    if line.startswith(_PREFIX):
        end = line.find(b'"', len(_PREFIX))
        if end > 0 and line[end:end + 3] == b'", ':
            return line[len(_PREFIX):end].decode("ascii", "replace")
    try:  # written by another encoder: decode it once
        return json.loads(line)["k"]
    except (ValueError, KeyError, TypeError):
        return None


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
    per_call: int | None = None,
) -> list:
    """Values for `keys` through the cache, computed in fixed chunks of positions by `compute`.

    A chunk is served from the cache only when all of it is cached, otherwise it is computed
    whole. Fixed chunk boundaries (independent of what is cached) keep batch composition, and so
    results, identical between an interrupted-and-resumed run and an uninterrupted one.
    `per_call`: up to this many positions (whole uncached chunks) go to `compute` at once, for engines
    that schedule their own batches (vLLM, a server); each call's chunks are cached when it returns.
    None: one chunk per call, for backends whose results depend on the batch.
    """
    out: list = [None] * len(keys)
    chunks = [list(range(lo, min(lo + chunk_size, len(keys)))) for lo in range(0, len(keys), chunk_size)]
    missing = []
    for idx in chunks:
        hit = [cache.get(keys[i]) for i in idx]
        if all(h is not None for h in hit):
            for i, h in zip(idx, hit):
                out[i] = decode(h)
            cache.hits += len(hit)
        else:
            missing.append(idx)
    calls: list[list[int]] = []
    for idx in missing:  # whole chunks, at most per_call positions per call (at least one chunk)
        if calls and per_call and len(calls[-1]) + len(idx) <= per_call:
            calls[-1].extend(idx)
        else:
            calls.append(list(idx))
    started, computed, last_report = time.monotonic(), 0, 0.0
    todo = sum(map(len, calls))
    for idx in calls:
        values = compute(idx)
        cache.put_many([(keys[i], encode(v)) for i, v in zip(idx, values)])
        for i, v in zip(idx, values):
            out[i] = v
        cache.misses += len(values)
        computed += len(values)
        now = time.monotonic()
        if progress and (now - last_report > 10 or computed == todo):
            last_report = now
            rate = computed / max(1e-9, now - started)
            left = todo - computed
            eta = f"{left / rate:.0f}s" if rate > 0 and left else "-"
            progress(f"{label}: {computed}/{todo} to compute of {len(keys)} ({100 * computed / max(1, todo):.0f}%), "
                     f"{rate:.1f} computed/s, ETA {eta}, cache hits {cache.hits}")
    if progress and not calls:
        progress(f"{label}: all {len(keys)} from the cache")
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
                         progress=progress, label=label, per_call=getattr(lm, "prompts_per_call", None))
