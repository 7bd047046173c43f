"""Synthetic models built once and shipped as HF model folders, the way real students come from a hub.

`qup world build` pretrains a study's synthetic students and reward models into
`data/world/<study>/<kind>/<name>/`: `model/` (an ordinary HF folder) and `recipe.json` (what made it: the
settings, the problems it must never see, a digest of the world's code, and the build's own record). A run
uses a shipped folder only when its recipe equals the one the study and the code give now, and its files are
the ones recorded; otherwise it says what differs and how to rebuild, and trains the model in the run as it
would without one. Pretraining the students was 56% of a cold study's step-seconds on 2 cores.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from qup_assets.backends.fingerprint import folder_fingerprint
from qup_assets.common import publish_dir, stable_hash, write_json_atomic

REPO_WORLD = Path(__file__).resolve().parents[2] / "data" / "world"
KINDS = ("students", "reward_models")


def world_dir() -> Path:
    """Where shipped models live: $QUP_WORLD, else the repository's data/world."""
    return Path(os.environ.get("QUP_WORLD") or REPO_WORLD)


def code_digest(modules: tuple[str, ...]) -> str:
    """A digest of the code that decides a model's weights: each module's syntax tree without docstrings, so
    comments and docs can change without a rebuild, and any change to what runs needs one."""
    h = hashlib.sha256()
    for name in modules:
        tree = ast.parse(Path(importlib.import_module(name).__file__).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                    and isinstance(getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
        h.update(name.encode())
        h.update(_dump(tree).encode())
    return h.hexdigest()


# Fields that later Pythons added to existing nodes (3.12: generics' type_params): left out when empty, so a tree
# reads the same on 3.11, 3.12 and 3.13 and a shipped model is not "out of date" on another Python (it was: every
# shipped model failed this check on 3.12, measured).
_NEWER_FIELDS = {"type_params"}
_MISSING = object()


def _dump(node) -> str:
    """ast.dump(node, annotate_fields=False) as Python 3.11 writes it, on any Python (3.12 adds fields, 3.13 omits
    empty ones by default): the recipes' code digests stay those they were shipped with."""
    if isinstance(node, ast.AST):
        cls, args, keywords = type(node), [], False
        for name in node._fields:
            value = getattr(node, name, _MISSING)
            if value is _MISSING:
                keywords = True
                continue
            if name in _NEWER_FIELDS and not value:
                continue
            if value is None and getattr(cls, name, ...) is None:
                keywords = True
                continue
            text = _dump(value)
            args.append(f"{name}={text}" if keywords else text)
        return f"{cls.__name__}({', '.join(args)})"
    if isinstance(node, list):
        return f"[{', '.join(_dump(x) for x in node)}]"
    return repr(node)


def excluded_digest(problem_ids) -> str:
    """The problems a model must never have trained on (the study's pool and benchmarks), as one digest."""
    return stable_hash(sorted(problem_ids))


def recipe_key(recipe: dict) -> str:
    return stable_hash(recipe)


def differences(shipped: dict, wanted: dict, prefix: str = "") -> list[str]:
    """The recipe fields that differ, as `path: shipped -> wanted` (digests shortened)."""
    out = []
    for k in sorted(set(shipped) | set(wanted)):
        a, b = shipped.get(k), wanted.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{k}.")
        elif a != b:
            short = [str(v)[:12] if isinstance(v, str) and len(v) == 64 else v for v in (a, b)]
            out.append(f"{prefix}{k}: {short[0]} -> {short[1]}")
    return out


@dataclass
class Shipped:
    """A shipped model that matches its recipe: the folder to copy and the build's record."""

    folder: Path
    recipe_file: Path
    record: dict
    origin: str  # where it came from, without the machine's paths: `shipped <study>/<kind>/<name> (recipe <key>)`


def location(study: str, kind: str, name: str) -> Path:
    assert kind in KINDS, kind
    return world_dir() / study / kind / name


def rebuild_command(study: str) -> str:
    return f"qup world build --study {study}"


def find(study: str, kind: str, name: str, recipe: dict) -> tuple[Shipped | None, str | None]:
    """(the shipped model, None) when one matches `recipe`; (None, why) when one is there but cannot be used
    (built from another recipe, or its files changed since); (None, None) when none was shipped."""
    where = location(study, kind, name)
    meta_path = where / "recipe.json"
    if not meta_path.is_file():
        return None, None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        shipped_recipe, fingerprint = meta["recipe"], meta["fingerprint"]
    except (ValueError, KeyError) as e:
        return None, f"{meta_path} is unreadable ({e}); rebuild it: `{rebuild_command(study)}`"
    if recipe_key(shipped_recipe) != recipe_key(recipe):
        diff = "; ".join(differences(shipped_recipe, recipe)) or "the recipe"
        return None, (f"the shipped {kind[:-1].replace('_', ' ')} {where} was built from another recipe ({diff}), so it is "
                      f"not used; training it in this run instead. Ship the new one: `{rebuild_command(study)}`")
    if folder_fingerprint(where / "model") != fingerprint:
        return None, (f"the files of {where / 'model'} are not the ones its recipe.json recorded (edited, damaged, or "
                      f"a Git LFS pointer), so it is not used; rebuild it: `{rebuild_command(study)}`")
    origin = f"shipped {study}/{kind}/{name} (recipe {recipe_key(recipe)[:12]})"
    return Shipped(where / "model", meta_path, meta.get("record", {}), origin), None


def ship(study: str, kind: str, name: str, recipe: dict, built_folder: Path, record: dict) -> Path:
    """Move a freshly built model folder into the world with its recipe (replacing whatever was there)."""
    where = location(study, kind, name)

    def save(tmp: Path):
        tmp.mkdir(parents=True)
        shutil.copytree(built_folder, tmp / "model")
        write_json_atomic({"recipe": recipe, "key": recipe_key(recipe), "fingerprint": folder_fingerprint(tmp / "model"),
                           "record": record}, tmp / "recipe.json")

    return publish_dir(save, where)


def copy_model(shipped: Shipped, out_dir: Path) -> Path:
    """The shipped model copied into the study's store, so the store holds every model it used (a copied or
    moved store keeps working) and nothing the study does can change what ships."""
    return publish_dir(lambda tmp: shutil.copytree(shipped.folder, tmp), out_dir)
