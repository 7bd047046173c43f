"""`qup world`: build the synthetic world's models once and ship them as HF folders in data/world.

`status` says, per synthetic student and reward model of a study, whether a shipped folder matches what the
study and the world's code ask for now; `build` (re)builds the ones that do not (all with --force), one
process per core, and writes each with its recipe (world/shipped.py). A run then copies them instead of
pretraining: the way paper.yaml reads Qwen from a local folder.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path

from qup_assets.mathcore.verify import VerifierPool
from qup_assets.problems.sources import load_benchmarks, load_problems, world_difficulty
from qup_assets.reward.synthetic import reward_model_recipe, train_study_reward_model
from qup_assets.study import load_study
from qup_assets.world.shipped import find, location, rebuild_command, ship
from qup_assets.world.student import build_record, build_synthetic_student, student_recipe


@dataclass
class Item:
    """One synthetic model of the study: what it must be built from, and whether the shipped one matches."""

    kind: str  # students | reward_models
    name: str
    spec: object
    recipe: dict
    state: str  # "shipped", "missing" or why the shipped one cannot be used


def _verifier(study) -> VerifierPool:
    v = study.verification
    return VerifierPool(workers=1, timeout=v.timeout_seconds, max_answer_chars=v.max_answer_chars,
                        answer_formats=v.answer_formats)


def excluded_problems(study) -> set[str]:
    """The study's pool and benchmark ids, loaded (not stored) exactly as problem_pool and benchmarks load
    them: the problems its synthetic models must never train on."""
    with _verifier(study) as verifier:
        pool = load_problems(study.problems, verifier, study).rows
        benches = load_benchmarks(study, verifier, set(pool["problem_id"]))
    return set(pool["problem_id"]).union(*(set(ps.rows["problem_id"]) for ps in benches.values()))


def study_items(study, exclude: set[str] | None = None) -> list[Item]:
    """The study's synthetic models with their recipes and whether the shipped ones match. The pool and
    benchmarks are loaded (for `exclude`) only when there is a synthetic model: paper.yaml's are HF datasets."""
    if not any(f.student.kind == "synthetic" for f in study.families.values()) and \
            not any(rm.kind == "synthetic" for rm in study.reward_models):
        return []
    exclude = excluded_problems(study) if exclude is None else exclude
    knobs = world_difficulty(study)
    items = []
    for name, fam in study.families.items():
        if fam.student.kind == "synthetic":
            items.append(Item("students", name, fam.student, student_recipe(fam.student, name, knobs, exclude), ""))
    for rm in study.reward_models:
        if rm.kind == "synthetic":
            items.append(Item("reward_models", rm.name, rm, reward_model_recipe(rm, knobs, exclude), ""))
    for it in items:
        shipped, why = find(study.name, it.kind, it.name, it.recipe)
        it.state = "shipped" if shipped else (why or "missing")
    return items


def _versions() -> dict:
    import tokenizers
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "tokenizers": tokenizers.__version__}


def _build_one(study_path: str, kind: str, name: str, threads: int) -> tuple[str, str, float, str]:
    """In its own process: build one model into a temp folder, then ship it with its recipe."""
    import torch

    torch.set_num_threads(threads)
    study = load_study(study_path)
    exclude = excluded_problems(study)
    item = next(it for it in study_items(study, exclude) if it.kind == kind and it.name == name)
    knobs = world_difficulty(study)
    started = time.monotonic()
    quiet = lambda m: None  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model"
        if kind == "students":
            with _verifier(study) as verifier:
                built = build_synthetic_student(item.spec, name, knobs, out, exclude, verifier, log=quiet,
                                                heldout=item.recipe["heldout"])
            record = build_record(built)
            summary = f"greedy accuracy {built.heldout_greedy_accuracy:.1%} on {built.heldout_problems} held-out problems"
        else:
            rep = train_study_reward_model(item.spec, knobs, exclude, out, log=quiet)
            record = {k: v for k, v in asdict(rep).items() if k != "path"}
            summary = f"held-out pair accuracy {rep.heldout_pair_accuracy:.1%}"
        seconds = time.monotonic() - started
        record.update(built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), build_seconds=round(seconds, 1),
                      torch_threads=threads, versions=_versions())
        ship(study.name, kind, name, item.recipe, out, record)
    return kind, name, seconds, summary


def cmd_world(args) -> int:
    study = load_study(args.study)
    items = study_items(study)
    if args.only:
        unknown = set(args.only) - {it.name for it in items}
        if unknown:
            print(f"error: {sorted(unknown)} is not a synthetic model of study {study.name} "
                  f"(those are: {[it.name for it in items]})", file=sys.stderr)
            return 2
        items = [it for it in items if it.name in args.only]
    if not items:
        print(f"study {study.name} has no synthetic students or reward models: nothing to build")
        return 0
    if args.action == "status":
        for it in items:
            print(f"  {it.kind[:-1]:13s} {it.name:20s} {location(study.name, it.kind, it.name)}: {it.state}")
        stale = [it for it in items if it.state != "shipped"]
        if stale:
            print(f"{len(stale)} of {len(items)} not shipped or out of date: `{rebuild_command(study.name)}` builds them")
        return 1 if stale else 0

    todo = items if args.force else [it for it in items if it.state != "shipped"]
    for it in items:
        if it not in todo:
            print(f"  {it.kind[:-1]:13s} {it.name:20s} shipped and up to date (--force rebuilds it)")
    if not todo:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    jobs = max(1, min(args.jobs or cores, len(todo)))
    threads = max(1, cores // jobs)
    print(f"building {len(todo)} model(s) of study {study.name}, {jobs} at a time ({threads} torch thread(s) each)")
    started = time.monotonic()
    # Longest first (the most pretraining tokens), so the last one to start is a short one.
    todo.sort(key=lambda it: -getattr(it.spec, "pretrain_steps", 0) * getattr(it.spec, "hidden_size", 0))
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_build_one, str(study.source_path), it.kind, it.name, threads) for it in todo]
        for f in as_completed(futures):
            kind, name, seconds, summary = f.result()
            print(f"  {kind[:-1]:13s} {name:20s} built in {seconds:.0f} s, {summary} -> {location(study.name, kind, name)}")
    print(f"done in {time.monotonic() - started:.0f} s; runs of study {study.name} now copy these instead of pretraining")
    return 0
