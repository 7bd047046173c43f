"""`qup run`, `qup report`, `qup worker`, `qup workspace`, `qup dev`: materialize a study through the Dagster instance and
print its report."""

import json
import os
import sys
from pathlib import Path

from qup_assets import memory
from qup_assets.assets.partitions import sync_families
from qup_assets.assets.resources import volunteer_to_oom_killer
from qup_assets.orchestration.daemon import workspace_file
from qup_assets.orchestration.dev import serve
from qup_assets.orchestration.instance import InstanceError, check_instance, ensure_dagster_home
from qup_assets.orchestration.staleness import report_outdated
from qup_assets.orchestration.study_run import StudyRun
from qup_assets.storage.namespace import NamespaceError, claim, legacy_layout, legacy_message
from qup_assets.storage.tables import report_dir, study_store
from qup_assets.study import REPO_ROOT, STUDIES_DIR, Study, load_study, resolve_study_path, store_root


def _namespace_ok(study: Study) -> bool:
    """The study may write its namespace: no other file owns the name, no old-layout tables at the root."""

    root = store_root()
    if legacy_layout(root):
        print(f"error: {legacy_message(root)}", file=sys.stderr)
        return False
    try:
        claim(root, study.name, study.source_path)
    except NamespaceError as e:
        print(f"error: {e}", file=sys.stderr)
        return False
    return True


def _resolve_selection(study: Study, defs, select: str | None) -> list:
    """Asset keys for a --select written without the study's prefix ('key:native_samples'), or with it."""
    import dagster as dg

    from qup_assets.definitions import study_assets

    graph = defs.resolve_asset_graph()
    if not select:
        return list(dg.AssetSelection.all().resolve(graph))
    selection = dg.AssetSelection.from_string(select)
    plain = dg.Definitions(assets=study_assets(study, prefix=False)[0], resources=defs.resources).resolve_asset_graph()
    keys = [dg.AssetKey([study.name, *k.path]) for k in selection.resolve(plain)]
    return keys or list(selection.resolve(graph))


def cmd_run(args) -> int:
    import signal

    import dagster as dg

    from qup_assets.definitions import build_definitions

    # Ctrl-C (SIGINT) cancels the launched runs, even when this process inherited SIGINT ignored: a command
    # started in the background by a non-interactive shell (`qup run ... &`), or by a parent that ignores it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    study = load_study(args.study)
    home = ensure_dagster_home()
    try:
        check_instance(home)
    except InstanceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not _namespace_ok(study):
        return 2
    _, too_big = memory.check(study, memory.local_folders(study))
    for problem in too_big:  # a GPU study that cannot fit its hardware: refused before anything is launched
        print(f"error: {problem} (qup plan --study {study.name} shows the sums)", file=sys.stderr)
    if too_big:
        return 2
    instance = dg.DagsterInstance.get()
    added = sync_families(study, instance)
    if added:
        print(f"added model_family partitions: {added}")
    families = list(study.families)
    if args.family:
        unknown = [f for f in args.family if f not in study.families]
        if unknown:
            print(f"error: families {unknown} are not in study {study.name!r} (has {families})", file=sys.stderr)
            return 2
        families = args.family
    defs = build_definitions(study.source_path)
    graph = defs.resolve_asset_graph()
    try:
        keys = _resolve_selection(study, defs, args.select)
    except Exception as e:  # noqa: BLE001 - Dagster raises several types for a bad selection
        print(f"error: invalid --select {args.select!r}: {e}\nexamples: 'group:problems', 'key:native_samples', "
              "'key:*_rewards' (wildcards), 'native_traces++' (two layers downstream)", file=sys.stderr)
        return 2
    if not keys:
        print(f"error: selection {args.select!r} matches no asset", file=sys.stderr)
        return 2
    # An explicit --select (or --force) materializes what it names; otherwise only what is out of date.
    runner = StudyRun(study, instance, home, graph, out=lambda s: print(s, flush=True),
                      err=lambda s: print(s, file=sys.stderr, flush=True))
    ok = runner.run(keys, families, force=bool(args.select or args.force))
    if not runner.ran:
        print("== everything is up to date: nothing to run")
    store = study_store(store_root(), study.name)
    print(f"\nstudy {study.name}: {'done' if ok else 'FAILED'}")
    print(f"  results: {store / 'tables'}  (query with: qup sql --study {study.name} \"select * from problem_pool limit 5\")")
    report = report_dir(store)
    print(f"  report:  {report}" if report.exists() else "  report:  none yet (materialize paradox_report)")
    print(f"  UI:      make dev, then http://127.0.0.1:3000 (DAGSTER_HOME={os.environ['DAGSTER_HOME']})")
    if ok and runner.ran and (report / "headline.txt").exists() and any(k.path[-1] == "paradox_report" for k in keys):
        print()
        print_report(report)
    return 0 if ok else 1


def cmd_workspace(args) -> int:
    """Print the path of a one-location workspace file for the study (what `make dev` serves for a study
    file outside data/studies, and what `qup run`'s daemon loads)."""

    print(workspace_file(load_study(args.study), ensure_dagster_home()))
    return 0


def cmd_dev(args) -> int:
    """`dagster dev` on the study: every study of data/studies when it is one of them (workspace.yaml), else a
    one-location workspace for its file; supervised so that Ctrl-C stops everything it started."""
    path = resolve_study_path(args.study).resolve()
    study = load_study(str(path))
    home = ensure_dagster_home()
    workspace = REPO_ROOT / "workspace.yaml" if path.parent == Path(STUDIES_DIR).resolve() else workspace_file(study, home)
    print(f"UI: http://{args.host}:{args.port}  (study {study.name}, DAGSTER_HOME={home}; Ctrl-C stops it)", flush=True)
    env = dict(os.environ, QUP_STUDY=str(path))
    return serve([sys.executable, "-m", "dagster", "dev", "-h", args.host, "-p", str(args.port), "-w", str(workspace)],
                 env=env)


def cmd_worker(args) -> int:
    """A Celery worker for an instance with the distributed profile (deploy/distributed/dagster.yaml): it takes
    runs from the instance's queue, one at a time, and executes each whole run here. The `threads` pool:
    a prefork child is a daemonic process, which may not start the verifier's worker processes, and a
    `solo` worker cannot answer the health check's ping while it runs."""
    import dagster as dg


    home = ensure_dagster_home()
    try:
        check_instance(home)
        from qup_assets.orchestration.celery_launcher import worker_app

        instance = dg.DagsterInstance.get()
        app = worker_app(instance)
    except (InstanceError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    volunteer_to_oom_killer(argv=["execute_run"])  # it executes the runs: the process to lose when memory runs out
    app.worker_main(["worker", "--loglevel", "INFO", "-Q", instance.run_launcher.default_queue,
                     "--concurrency", str(args.concurrency), "--pool", "threads", "-n", f"{args.name}@%h",
                     "--without-gossip", "--without-mingle"])
    return 0


def print_report(report: Path) -> None:
    verdict = json.loads((report / "verdict.json").read_text(encoding="utf-8"))
    print("Table 1 (mean reward and Avg@k with 95% CIs):\n")
    print((report / "headline.txt").read_text(encoding="utf-8"))
    print()
    for line in verdict["verdict"] + verdict.get("by_reward_model", []):  # a report from before: no per-RM lines
        print(line)
    print(f"\nreport: {report / 'report.md'}\n        {report / 'report.html'}")


def cmd_report(args) -> int:
    study = load_study(args.study)
    report = report_dir(study_store(store_root(), study.name))
    if not (report / "headline.txt").exists():
        print(f"error: no report for study {study.name!r} under {report}; build it with: qup run --study {study.name}"
              " (or materialize paradox_report in the UI)", file=sys.stderr)
        return 1
    print_report(report)
    stale = _report_staleness(study)
    if stale:
        print(f"\nwarning: this report is older than its inputs ({stale}); refresh it with: qup run --study "
              f"{study.name} (or materialize paradox_report_job in the UI)", file=sys.stderr)
    return 0


def _report_staleness(study: Study) -> str | None:
    """Why the stored report is out of date with the instance's materializations (None: current)."""
    import dagster as dg

    from qup_assets.definitions import build_definitions

    ensure_dagster_home()
    graph = build_definitions(study.source_path).resolve_asset_graph()
    return report_outdated(graph, dg.DagsterInstance.get(), dg.AssetKey([study.name, "paradox_report"]))
