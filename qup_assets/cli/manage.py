"""`qup plan`, `qup families`, `qup store`: size a study, sync its families, move an old store."""

import sys

from qup_assets import memory
from qup_assets.assets.history import copy_history
from qup_assets.assets.partitions import family_diff, sync_families
from qup_assets.cli.world import study_items
from qup_assets.orchestration.instance import ensure_dagster_home
from qup_assets.orchestration.stages import split_stages
from qup_assets.plan import estimate
from qup_assets.storage.namespace import NamespaceError, claim, legacy_layout, migrate_files
from qup_assets.storage.tables import study_store
from qup_assets.study import load_study, store_root


def cmd_plan(args) -> int:
    import dagster as dg

    from qup_assets.definitions import build_definitions

    study = load_study(args.study)
    ensure_dagster_home()
    missing, orphaned = family_diff(study, dg.DagsterInstance.get())
    defs = build_definitions(study.source_path)
    graph = defs.resolve_asset_graph()

    roots, partitioned, sinks = split_stages(graph, graph.get_all_asset_keys())
    print(f"study {study.name} ({study.source_path})")
    print("\nfamilies:")
    for name, fam in study.families.items():
        student = fam.student.model if fam.student.kind == "hf" else f"synthetic {fam.student.architecture}/{fam.student.style}"
        state = "partition missing (qup families sync)" if name in missing else "partition ok"
        print(f"  {name:24s} {student:40s} backend={fam.backend.kind:12s} {state}")
    for name in orphaned:
        print(f"  {name:24s} (not in the study any more; partition and data kept)")
    print("\nassets:")
    print("  once:        " + ", ".join(k.to_user_string() for k in roots))
    if partitioned:
        print(f"  per family ({len(study.families)} partitions): " + ", ".join(k.to_user_string() for k in partitioned))
    if sinks:
        print("  after all families: " + ", ".join(k.to_user_string() for k in sinks))
    synthetic = study_items(study)
    if synthetic:
        print("\nsynthetic models (data/world, `qup world status`):")
        for it in synthetic:
            state = "shipped: copied, not pretrained" if it.state == "shipped" else (
                "not shipped: pretrained in the run" if it.state == "missing" else "out of date: pretrained in the run")
            print(f"  {it.kind[:-1]:13s} {it.name:24s} {state}")
    print("\ncompute estimate (upper bounds):")

    for label, value in estimate(study, study_store(store_root(), study.name)):
        print(f"  {label:58s} {value:>22s}" if len(value) <= 22 else f"  {label}\n      {value}")
    rows, problems = memory.check(study, memory.local_folders(study))
    print("\nGPU memory (qup_assets/memory.py; per GPU, estimates on the high side):")
    for label, value in rows:
        print(f"  {label}\n      {value}" if value else f"  {label}")
    for p in problems:
        print(f"  DOES NOT FIT: {p}")
    return 1 if problems else 0


def cmd_families(args) -> int:
    import dagster as dg


    study = load_study(args.study)
    ensure_dagster_home()
    instance = dg.DagsterInstance.get()
    if args.action == "sync":
        added = sync_families(study, instance)
        print(f"added: {added}" if added else "in sync: nothing to add")
    missing, orphaned = family_diff(study, instance)
    for name in study.families:
        print(f"{name}\t{'missing' if name in missing else 'partition'}")
    for name in orphaned:
        print(f"{name}\tpartition only (removed from the study; data kept)")
    return 0


def cmd_store(args) -> int:
    """`qup store migrate --study NAME`: move a pre-namespace store's tables into that study's folder."""
    import dagster as dg

    from qup_assets.definitions import build_definitions

    study = load_study(args.study)
    root = store_root()
    if not legacy_layout(root):
        print(f"nothing to migrate: {root} has no tables from before per-study namespaces")
        return 0
    try:
        moves = migrate_files(root, study.name)
        claim(root, study.name, study.source_path)
    except NamespaceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for src, dst in moves:
        print(f"moved {src} -> {dst}")
    ensure_dagster_home()
    graph = build_definitions(study.source_path).resolve_asset_graph()
    n = copy_history(study, dg.DagsterInstance.get(), graph)
    print(f"recorded {n} materializations under the {study.name}/ asset keys (history and code versions kept)")
    left = legacy_layout(root)
    if left:
        print(f"still at the store root (other studies' reports): {left}")
    return 0
