"""Helpers every stage shares: stable hashes (cache keys, seeds, ids) and atomic writes (a reader, or a run that
crashed, sees the old file or the new one, never half of one)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path

import pandas as pd


def stable_hash(*parts) -> str:
    """sha256 of the parts as canonical JSON: the same on every machine and Python version."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
                          .encode("utf-8", "surrogatepass")).hexdigest()


def problem_id(problem: str) -> str:
    """Stable id from the problem text (whitespace and case insensitive)."""
    key = re.sub(r"\s+", " ", problem.strip().lower())
    return "p-" + hashlib.sha1(key.encode("utf-8")).hexdigest()[:12]


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def write_parquet_atomic(df: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        df.to_parquet(tmp, index=False)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json_atomic(obj, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_bytes_atomic(data: bytes, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def publish_dir(save, out_dir: Path) -> Path:
    """Write a folder atomically (a model checkpoint): `save(tmp)` fills a sibling temp folder, which then
    replaces out_dir."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(out_dir)
    try:
        save(tmp)
        old = _tmp_sibling(out_dir) if out_dir.exists() else None
        if old:
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def format_params(n: int | float | None) -> str:
    """A parameter count as people say it: 1.54B, 7.62B, 930K (None: not known)."""
    if n is None or n != n:
        return "unknown"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(int(n))
