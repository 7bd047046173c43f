"""Reading a study file: by name under data/studies or by path, duplicate YAML keys refused, errors that name the
file, the field and what was expected."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import ValidationError

from qup_assets.study.base import DEFAULT_STUDY, REPO_ROOT, STUDIES_DIR, StudyError
from qup_assets.study.schema import Study


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first defined on line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def resolve_study_path(name_or_path: str | None = None) -> Path:
    """A study name under data/studies (e.g. 'tiny') or a path; default $QUP_STUDY, then 'tiny'."""
    ref = name_or_path or os.environ.get("QUP_STUDY") or DEFAULT_STUDY
    candidate = Path(ref).expanduser()
    if candidate.suffix in (".yaml", ".yml") or os.sep in ref:
        path = candidate
    else:
        path = STUDIES_DIR / f"{ref}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in STUDIES_DIR.glob("*.yaml"))
        raise StudyError(f"study {ref!r} not found at {path}; known studies: {known}, or pass a path to a .yaml file")
    return path.resolve()


def _format_errors(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: invalid study file ({err.error_count()} problem(s))"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; unknown keys are not allowed)"
        got = e.get("input")
        shown = "" if e["type"] in ("missing", "extra_forbidden") or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  {loc}: {msg}{shown}")
    return "\n".join(lines)


def load_study(name_or_path: str | None = None) -> Study:
    path = resolve_study_path(name_or_path)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        raise StudyError(f"{path}: not valid YAML: {e}") from None
    except UnicodeDecodeError as e:
        raise StudyError(f"{path}: not UTF-8 text: {e}") from None
    if not isinstance(raw, dict):
        raise StudyError(f"{path}: a study file must be a YAML mapping, got {type(raw).__name__}")
    if "source_path" in raw:
        raise StudyError(f"{path}: source_path: unknown key (set by the loader, not the file)")
    try:
        return Study.model_validate({**raw, "source_path": str(path)})
    except ValidationError as e:
        raise StudyError(_format_errors(path, e)) from None


def store_root() -> Path:
    """Where every output lives: $QUP_STORE, default data/store in the repo (git-ignored)."""
    return Path(os.environ.get("QUP_STORE") or REPO_ROOT / "data" / "store").expanduser().resolve()
