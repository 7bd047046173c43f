"""`qup`: run the study through the Dagster instance, size it, sync families, query results, debug verdicts."""

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from qup_assets.mathcore.extract import ANSWER_FORMATS, gold_from_cell
from qup_assets.study import REPO_ROOT, Study, StudyError, load_study, store_root


def ensure_dagster_home() -> Path:
    """DAGSTER_HOME, default .dagster_home in the repo, holding a copy of the repo's dagster.yaml."""
    home = Path(os.environ.get("DAGSTER_HOME") or REPO_ROOT / ".dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists() and (REPO_ROOT / "dagster.yaml").exists():
        shutil.copy(REPO_ROOT / "dagster.yaml", cfg)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


# ---------------------------------------------------------------- run


def _namespace_ok(study: Study) -> bool:
    """The study may write its namespace: no other file owns the name, no old-layout tables at the root."""
    from qup_assets.storage.namespace import NamespaceError, claim, legacy_layout, legacy_message

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
    plain = dg.Definitions(assets=study_assets(study, prefix=False), resources=defs.resources).resolve_asset_graph()
    keys = [dg.AssetKey([study.name, *k.path]) for k in selection.resolve(plain)]
    return keys or list(selection.resolve(graph))


def cmd_run(args) -> int:
    import dagster as dg

    from qup_assets.assets.partitions import sync_families
    from qup_assets.definitions import build_definitions
    from qup_assets.orchestration.instance import InstanceError, check_instance
    from qup_assets.orchestration.study_run import StudyRun
    from qup_assets.storage.tables import report_dir, study_store

    study = load_study(args.study)
    home = ensure_dagster_home()
    try:
        check_instance(home)
    except InstanceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not _namespace_ok(study):
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


# ---------------------------------------------------------------- report


def print_report(report: Path) -> None:
    verdict = json.loads((report / "verdict.json").read_text(encoding="utf-8"))
    print("Table 1 (mean reward and Avg@k with 95% CIs):\n")
    print((report / "headline.txt").read_text(encoding="utf-8"))
    print()
    for line in verdict["verdict"]:
        print(line)
    print(f"\nreport: {report / 'report.md'}\n        {report / 'report.html'}")


def cmd_report(args) -> int:
    from qup_assets.storage.tables import report_dir, study_store

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
    from qup_assets.orchestration.staleness import report_outdated

    ensure_dagster_home()
    graph = build_definitions(study.source_path).resolve_asset_graph()
    return report_outdated(graph, dg.DagsterInstance.get(), dg.AssetKey([study.name, "paradox_report"]))


def cmd_workspace(args) -> int:
    """Print the path of a one-location workspace file for the study (what `make dev` serves for a study
    file outside data/studies, and what `qup run`'s daemon loads)."""
    from qup_assets.orchestration.daemon import workspace_file

    print(workspace_file(load_study(args.study), ensure_dagster_home()))
    return 0


def cmd_worker(args) -> int:
    """A Celery worker for an instance with the distributed profile (deploy/distributed/dagster.yaml): it takes
    runs from the instance's queue, one at a time, and executes each whole run here. The `threads` pool:
    a prefork child is a daemonic process, which may not start the verifier's worker processes, and a
    `solo` worker cannot answer the health check's ping while it runs."""
    import dagster as dg

    from qup_assets.orchestration.instance import InstanceError, check_instance

    home = ensure_dagster_home()
    try:
        check_instance(home)
        from qup_assets.orchestration.celery_launcher import worker_app

        instance = dg.DagsterInstance.get()
        app = worker_app(instance)
    except (InstanceError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    app.worker_main(["worker", "--loglevel", "INFO", "-Q", instance.run_launcher.default_queue,
                     "--concurrency", str(args.concurrency), "--pool", "threads", "-n", f"{args.name}@%h",
                     "--without-gossip", "--without-mingle"])
    return 0


# ---------------------------------------------------------------- plan


def cmd_plan(args) -> int:
    import dagster as dg

    from qup_assets.assets.partitions import family_diff
    from qup_assets.definitions import build_definitions

    study = load_study(args.study)
    ensure_dagster_home()
    missing, orphaned = family_diff(study, dg.DagsterInstance.get())
    defs = build_definitions(study.source_path)
    graph = defs.resolve_asset_graph()
    from qup_assets.orchestration.stages import split_stages

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
    print("\ncompute estimate (upper bounds):")
    from qup_assets.plan import estimate
    from qup_assets.storage.tables import study_store

    for label, value in estimate(study, study_store(store_root(), study.name)):
        print(f"  {label:58s} {value:>22s}" if len(value) <= 22 else f"  {label}\n      {value}")
    return 0


# ---------------------------------------------------------------- families


def cmd_families(args) -> int:
    import dagster as dg

    from qup_assets.assets.partitions import family_diff, sync_families

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


# ---------------------------------------------------------------- store


def cmd_store(args) -> int:
    """`qup store migrate --study NAME`: move a pre-namespace store's tables into that study's folder."""
    import dagster as dg

    from qup_assets.assets.history import copy_history
    from qup_assets.definitions import build_definitions
    from qup_assets.storage.namespace import NamespaceError, claim, legacy_layout, migrate_files

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


# ---------------------------------------------------------------- sql, verify


def cmd_sql(args) -> int:
    import duckdb

    from qup_assets.storage.catalog import list_tables, query

    from qup_assets.storage.tables import study_store

    study = load_study(args.study)
    store = study_store(store_root(), study.name)
    try:
        df = query(store, args.query)
    except duckdb.Error as e:
        print(f"error: {e}\ntables of study {study.name!r} in {store}: "
              f"{list_tables(store) or f'none yet (run qup run --study {study.name})'}", file=sys.stderr)
        return 1
    if args.format == "csv":
        df.to_csv(sys.stdout, index=False)
    elif args.format == "json":
        print(df.to_json(orient="records", force_ascii=False, default_handler=str))
    else:
        import pandas as pd

        with pd.option_context("display.max_rows", 200, "display.max_columns", 50, "display.width", 200,
                               "display.max_colwidth", 60):
            print(df.to_string(index=False) if len(df) else "(no rows)")
    return 0


def cmd_verify(args) -> int:
    from qup_assets.mathcore.verify import VerifierPool

    if args.file:
        return _verify_file(args)
    if args.gold is None or args.prediction is None:
        print("qup verify: give GOLD and PREDICTION, or --file PAIRS.jsonl", file=sys.stderr)
        return 2
    with VerifierPool(workers=1, timeout=args.timeout, answer_formats=args.answer_formats) as pool:
        res = pool.verify(gold_from_cell(args.gold) or "", args.prediction)
    print(json.dumps(res.to_dict(), ensure_ascii=False))
    return 0 if res.correct else 1


def _verify_file(args) -> int:
    """One JSON line per pair of a JSONL file ({"gold", "pred", optional "id"}), then a summary line; a bad
    line is reported with its number and skipped, never a crash."""
    from collections import Counter

    from qup_assets.mathcore.verify import VerifierPool

    path = Path(args.file)
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        print(f"qup verify: cannot read {path}: {e.strerror}", file=sys.stderr)
        return 2
    pairs, meta, skipped = [], [], 0
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
            missing = [k for k in ("gold", "pred") if not isinstance(row.get(k), (str, int, float))
                       or isinstance(row.get(k), bool)]
            if missing:
                raise ValueError(f"needs string fields gold and pred (missing or not text: {', '.join(missing)})")
        except ValueError as e:
            skipped += 1
            print(json.dumps({"line": n, "skipped": str(e)[:200]}))
            continue
        pairs.append((gold_from_cell(str(row["gold"])) or "", str(row["pred"])))
        meta.append({"line": n, **({"id": row["id"]} if isinstance(row.get("id"), (str, int)) else {})})
    with VerifierPool(workers=2, timeout=args.timeout, answer_formats=args.answer_formats) as pool:
        results = pool.verify_many(pairs)
    for m, r in zip(meta, results):
        print(json.dumps({**m, **r.to_dict()}, ensure_ascii=False))
    verdicts = Counter(r.verdict for r in results)
    print(json.dumps({"summary": {"pairs": len(results), "correct": sum(r.correct for r in results),
                                  "verdicts": dict(sorted(verdicts.items())), "skipped_lines": skipped}}))
    return 0


# ---------------------------------------------------------------- export


def cmd_export(args) -> int:
    """`qup export --study NAME --format lighteval --out DIR`: the study's eval tables as results files."""
    from qup_assets.report.export import FORMATS, study_lighteval, write_lighteval
    from qup_assets.storage.tables import study_store

    if args.format not in FORMATS:
        print(f"error: unknown export format {args.format!r}; formats: {', '.join(FORMATS)}", file=sys.stderr)
        return 2
    study = load_study(args.study)
    store = study_store(store_root(), study.name)
    results = study_lighteval(study, store)
    if not results:
        print(f"error: no eval tables for study {study.name!r} under {store / 'tables'} (*_eval/<family>.parquet); "
              f"build them with: qup run --study {study.name}", file=sys.stderr)
        return 1
    for path in write_lighteval(results, Path(args.out)):
        print(path)
    return 0


# ---------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qup", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def study_arg(sp):
        sp.add_argument("--study", help="study name under data/studies or a path (default: $QUP_STUDY or tiny)")

    r = sub.add_parser("run", help="materialize the study through the Dagster instance")
    study_arg(r)
    r.add_argument("--family", action="append", help="only this family's partition (repeatable)")
    r.add_argument("--select", help="Dagster asset selection, e.g. 'problem_pool' or 'group:problems'")
    r.add_argument("--force", action="store_true", help="materialize every selected asset, even if up to date")
    r.set_defaults(fn=cmd_run)

    rp = sub.add_parser("report", help="print the paradox report's headline table, verdict and path")
    study_arg(rp)
    rp.set_defaults(fn=cmd_report)

    pl = sub.add_parser("plan", help="families, assets, partitions and a compute estimate")
    study_arg(pl)
    pl.set_defaults(fn=cmd_plan)

    f = sub.add_parser("families", help="the study's families against the instance's partitions")
    f.add_argument("action", choices=["list", "sync"])
    study_arg(f)
    f.set_defaults(fn=cmd_families)

    st = sub.add_parser("store", help="move a store written before per-study namespaces into a study's folder")
    st.add_argument("action", choices=["migrate"])
    study_arg(st)
    st.set_defaults(fn=cmd_store)

    w = sub.add_parser("workspace", help="write a one-code-location workspace file for the study; prints its path")
    study_arg(w)
    w.set_defaults(fn=cmd_workspace)

    wk = sub.add_parser("worker", help="a Celery worker for the distributed instance profile (runs whole runs)")
    wk.add_argument("--name", default="qup", help="worker name (the node is NAME@host; recorded on each run)")
    wk.add_argument("--concurrency", type=int, default=1, help="runs at once on this worker (one per GPU box)")
    wk.set_defaults(fn=cmd_worker)

    q = sub.add_parser("sql", help="DuckDB SQL over a study's stored tables (one view per asset)")
    q.add_argument("query")
    study_arg(q)
    q.add_argument("--format", choices=["table", "csv", "json"], default="table")
    q.set_defaults(fn=cmd_sql)

    v = sub.add_parser("verify", help="extract and verify an answer (or a JSONL file of pairs); prints JSON")
    v.add_argument("gold", nargs="?")
    v.add_argument("prediction", nargs="?")
    v.add_argument("--file", help="JSONL with gold, pred and optional id per line: one JSON line per pair, then a summary")
    v.add_argument("--timeout", type=float, default=5.0)
    v.add_argument("--answer-formats", choices=ANSWER_FORMATS, default="standard",
                   help="which answer formats count (a study's verification.answer_formats; paper: qwen_math)")
    v.set_defaults(fn=cmd_verify)

    ex = sub.add_parser("export", help="write the study's eval results for other tools (lighteval's results JSON)")
    study_arg(ex)
    ex.add_argument("--format", default="lighteval",
                    help="lighteval (the only format for now): results/<study>/<family>-<variant>-<objective>/"
                    "results_<date>.json per trained model, <family>-base for the base model")
    ex.add_argument("--out", required=True, help="folder to write into")
    ex.set_defaults(fn=cmd_export)
    return p


def main(argv: list[str] | None = None) -> int:
    from qup_assets.storage.namespace import NamespaceError

    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (StudyError, NamespaceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the runs this command launched were canceled", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
