"""`qup`: run the study through the Dagster instance, size it, sync families, query results, debug verdicts."""

import argparse
import importlib
import sys

from qup_assets.mathcore.extract import ANSWER_FORMATS
from qup_assets.storage.namespace import NamespaceError
from qup_assets.study import StudyError

__all__ = ["build_parser", "main"]

# Each command's module is loaded when it runs (`fn="module:function"`): `qup sql` and `qup verify` never import
# Dagster or the asset graph, so they start in a fraction of a second.


def _command(ref: str):
    module, fn = ref.split(":")
    return getattr(importlib.import_module(f"qup_assets.cli.{module}"), fn)


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
    r.set_defaults(fn="run:cmd_run")

    rp = sub.add_parser("report", help="print the paradox report's headline table, verdict and path")
    study_arg(rp)
    rp.set_defaults(fn="run:cmd_report")

    pl = sub.add_parser("plan", help="families, assets, partitions and a compute estimate")
    study_arg(pl)
    pl.set_defaults(fn="manage:cmd_plan")

    f = sub.add_parser("families", help="the study's families against the instance's partitions")
    f.add_argument("action", choices=["list", "sync"])
    study_arg(f)
    f.set_defaults(fn="manage:cmd_families")

    st = sub.add_parser("store", help="move a store written before per-study namespaces into a study's folder")
    st.add_argument("action", choices=["migrate"])
    study_arg(st)
    st.set_defaults(fn="manage:cmd_store")

    w = sub.add_parser("workspace", help="write a one-code-location workspace file for the study; prints its path")
    study_arg(w)
    w.set_defaults(fn="run:cmd_workspace")

    dv = sub.add_parser("dev", help="the Dagster UI and daemon for the study (what `make dev` runs); Ctrl-C stops "
                        "everything it started")
    study_arg(dv)
    dv.add_argument("--port", type=int, default=3000)
    dv.add_argument("--host", default="127.0.0.1", help="listen address (default: this machine only)")
    dv.set_defaults(fn="run:cmd_dev")

    wd = sub.add_parser("world", help="build the synthetic world's students and reward models once, as shipped HF folders")
    wd.add_argument("action", choices=["status", "build"])
    study_arg(wd)
    wd.add_argument("--only", action="append", metavar="NAME", help="only this family's student or this reward model (repeatable)")
    wd.add_argument("--force", action="store_true", help="rebuild even what is shipped and up to date")
    wd.add_argument("--jobs", type=int, help="models built at once (default: one per core)")
    wd.set_defaults(fn="world:cmd_world")

    wk = sub.add_parser("worker", help="a Celery worker for the distributed instance profile (runs whole runs)")
    wk.add_argument("--name", default="qup", help="worker name (the node is NAME@host; recorded on each run)")
    wk.add_argument("--concurrency", type=int, default=1, help="runs at once on this worker (one per GPU box)")
    wk.set_defaults(fn="run:cmd_worker")

    q = sub.add_parser("sql", help="DuckDB SQL over a study's stored tables (one view per asset)")
    q.add_argument("query")
    study_arg(q)
    q.add_argument("--format", choices=["table", "csv", "json"], default="table")
    q.set_defaults(fn="query:cmd_sql")

    v = sub.add_parser("verify", help="extract and verify an answer (or a JSONL file of pairs); prints JSON")
    v.add_argument("gold", nargs="?")
    v.add_argument("prediction", nargs="?")
    v.add_argument("--file", help="JSONL with gold, pred and optional id per line: one JSON line per pair, then a summary")
    v.add_argument("--timeout", type=float, default=5.0)
    v.add_argument("--answer-formats", choices=ANSWER_FORMATS, default="standard",
                   help="which answer formats count (a study's verification.answer_formats; paper: qwen_math)")
    v.set_defaults(fn="query:cmd_verify")

    ex = sub.add_parser("export", help="write the study's eval results for other tools (lighteval's results JSON)")
    study_arg(ex)
    ex.add_argument("--format", default="lighteval",
                    help="lighteval (the only format for now): results/<study>/<family>-<variant>-<objective>/"
                    "results_<date>.json per trained model, <family>-base for the base model")
    ex.add_argument("--out", required=True, help="folder to write into")
    ex.set_defaults(fn="query:cmd_export")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _command(args.fn)(args)
    except (StudyError, NamespaceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the runs this command launched were canceled", file=sys.stderr)
        return 130
