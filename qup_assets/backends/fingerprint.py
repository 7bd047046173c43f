"""A model's identity for the response cache: what changes when the weights or tokenizer change."""

from __future__ import annotations

import hashlib
from pathlib import Path

_EDGE = 1 << 20  # bytes hashed at each end of a large file


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    size = path.stat().st_size
    with path.open("rb") as f:
        if size <= 4 * _EDGE:
            h.update(f.read())
        else:  # multi-GB weights: size plus both ends, fast and still changes on any re-save
            h.update(str(size).encode())
            h.update(f.read(_EDGE))
            f.seek(size - _EDGE)
            h.update(f.read(_EDGE))
    return h.hexdigest()


def folder_fingerprint(folder: str | Path) -> str:
    """sha256 over the names and contents of config, tokenizer and weight files of an HF model folder."""
    root = Path(folder)
    if not root.is_dir():
        return hashlib.sha256(str(folder).encode()).hexdigest()  # a served model name: identity is the name
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.name.startswith(".") and p.suffix in {".json", ".safetensors", ".bin", ".model", ".txt", ".jinja", ".py"}:
            h.update(str(p.relative_to(root)).encode())
            h.update(_file_digest(p).encode())
    return h.hexdigest()
