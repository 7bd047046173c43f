"""`qup sql`, `qup verify`, `qup export`: read a study's results and check answers (no Dagster: quick to start,
so they can run in loops and scripts)."""

import json
import sys
from pathlib import Path

from qup_assets.mathcore.extract import gold_from_cell
from qup_assets.mathcore.verify import VerifierPool
from qup_assets.report.export import FORMATS, study_lighteval, write_lighteval
from qup_assets.storage.catalog import list_tables, query
from qup_assets.storage.tables import study_store
from qup_assets.study import load_study, store_root


def cmd_sql(args) -> int:
    import duckdb



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


def cmd_export(args) -> int:
    """`qup export --study NAME --format lighteval --out DIR`: the study's eval tables as results files."""

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
