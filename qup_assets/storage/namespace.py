"""One namespace per study in a shared store: which study file owns a name, and the move from the old layout.

Each study writes only under QUP_STORE/studies/<name>/. The folder remembers which study file
claimed it (`study.json`: the file's path relative to the store root and a hash of its text), so a
second, different file with the same `name` is refused before it writes anything. Editing the file
in place, or moving the store together with its study files, keeps the claim.

Stores written before namespaces kept every study's tables at the root (tables/, artifacts/, cache/,
reports/<name>/); `qup store migrate --study NAME` moves them into the study's folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from qup_assets.common import write_json_atomic
from qup_assets.storage.tables import study_store

CLAIM = "study.json"
LEGACY = ("tables", "artifacts", "cache")


class NamespaceError(ValueError):
    """Two study files claim one name in a store, or the store still has the old layout."""


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _relative(path: Path, root: Path) -> str:
    return os.path.relpath(Path(path).resolve(), Path(root).resolve())


def check_claim(root: Path, name: str, source_path: str | Path) -> None:
    """Raise if another, different study file already owns `name` in this store (reads only)."""
    claim = study_store(root, name) / CLAIM
    if not claim.is_file():
        return
    try:
        owner = json.loads(claim.read_text(encoding="utf-8"))
    except ValueError:
        return  # a torn claim is rewritten by the next run
    mine = _relative(source_path, root)
    if owner.get("source") == mine:
        return
    other = (Path(root) / owner.get("source", "")).resolve()
    if not other.is_file():
        return  # the old file is gone (renamed or moved): this one takes the name over
    text = Path(source_path).read_text(encoding="utf-8")
    if other.read_text(encoding="utf-8") != text:
        raise NamespaceError(
            f"study name {name!r} in store {root} already belongs to {other}, and {Path(source_path).resolve()} "
            f"has the same name but different content. Give this study its own `name:` (each name is a separate "
            f"namespace), or point QUP_STORE at another store.")


def claim(root: Path, name: str, source_path: str | Path) -> Path:
    """Check the claim, then record this study file as the owner of `name`; returns the study store."""
    check_claim(root, name, source_path)
    store = study_store(root, name)
    record = {"name": name, "source": _relative(source_path, root),
              "sha256": _digest(Path(source_path).read_text(encoding="utf-8"))}
    path = store / CLAIM
    try:
        current = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        current = None
    if current != record:
        write_json_atomic(record, path)
    return store


def legacy_layout(root: Path) -> list[str]:
    """Folders of the pre-namespace layout still at the store root (empty when there are none)."""
    root = Path(root)
    found = [d for d in LEGACY if (root / d).is_dir()]
    if (root / "reports").is_dir() and any((root / "reports").iterdir()):
        found.append("reports")
    return found


def legacy_message(root: Path) -> str:
    return (f"store {root} has tables from before per-study namespaces ({', '.join(legacy_layout(root))} at its root). "
            "Move them into the study they belong to, once, with: qup store migrate --study NAME")


def migrate_files(root: Path, name: str) -> list[tuple[Path, Path]]:
    """Move the old root-level tables/, artifacts/, cache/ and reports/<name>/ into the study's folder.

    Refuses when the study folder already holds any of them, so nothing is overwritten; other studies'
    reports stay where they are (and are listed by legacy_layout until migrated too).
    """
    root = Path(root)
    store = study_store(root, name)
    moves = [(root / d, store / d) for d in LEGACY if (root / d).is_dir()]
    if (root / "reports" / name).is_dir():
        moves.append((root / "reports" / name, store / "report"))
    clash = [str(dst) for _, dst in moves if dst.exists()]
    if clash:
        raise NamespaceError(f"cannot migrate into {store}: already there: {clash}; nothing was moved")
    store.mkdir(parents=True, exist_ok=True)
    for src, dst in moves:
        shutil.move(str(src), str(dst))
    reports = root / "reports"
    if reports.is_dir() and not any(reports.iterdir()):
        reports.rmdir()
    return moves
