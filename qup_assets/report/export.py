"""The study's eval tables as other tools' results files (`qup export`).

lighteval: one results JSON per evaluated model, in the shape lighteval's EvaluationTracker writes
(src/lighteval/logging/evaluation_tracker.py) and open-r1's and leaderboards' readers take: top-level
`config_general`, `results`, `versions`, `config_tasks`, `summary_tasks`, `summary_general`. `results`
maps each task ("suite|task|fewshot") to metric -> value plus "<metric>_stderr", and "all" to the mean
over tasks (here the eval table's macro row, which is that mean). The models are every (family, variant,
objective) with an eval table in the store, at the training grid's main point, and each family's base
model. Plain pandas and json: no Dagster.
"""

from __future__ import annotations

import json
import math
import os
from datetime import datetime
from pathlib import Path

import pandas as pd

from qup_assets.evaluation.metrics import MACRO
from qup_assets.report.analysis import at_main_point
from qup_assets.storage.tables import table_dir, table_path

FORMATS = ("lighteval",)
SUITE = "custom"  # lighteval's suite for tasks outside its registry (LightevalTaskConfig's default)
FEWSHOT = 0  # the study's prompts have no few-shot examples
Z95 = 1.959963984540054  # the eval tables carry 95% bootstrap intervals; lighteval wants a standard error


def task_name(benchmark: str, suite: str = SUITE) -> str:
    return f"{suite}|{benchmark}|{FEWSHOT}"


def _num(v) -> float | None:
    """A JSON number, or null for a missing value (lighteval would write NaN, which is not JSON)."""
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


def _stderr(low, high) -> float | None:
    """The standard error a normal approximation reads off the 95% interval: its width / (2 * 1.96)."""
    low, high = _num(low), _num(high)
    return None if low is None or high is None else (high - low) / (2 * Z95)


def metric_names(k: int) -> tuple[str, str, str]:
    """lighteval's names for what one eval row holds: extractive_match (the math tasks' per-sample accuracy,
    whose expectation is Avg@k), avg@n with its sample count, and pass@k."""
    return "extractive_match", f"avg@n:n={k}", f"pass@k:k={k}&n={k}"


def _metrics(row: pd.Series, k: int) -> dict:
    em, avg, pass_k = metric_names(k)
    acc, se = _num(row["avg_at_k"]), _stderr(row["ci_low"], row["ci_high"])
    return {em: acc, f"{em}_stderr": se, avg: acc, f"{avg}_stderr": se, pass_k: _num(row["pass_at_k"])}


def lighteval_results(evals: pd.DataFrame, model_name: str, generation: dict | None = None,
                      sources: dict[str, str] | None = None, qup: dict | None = None, suite: str = SUITE) -> dict:
    """One model's rows of an eval table (evaluation/metrics.py EVAL_COLUMNS: one row per benchmark plus the
    macro row, a single family, objective and grid point) as lighteval's results JSON. `generation`:
    lighteval's generation parameters (temperature, top_p, max_new_tokens, seed); `sources`: benchmark ->
    dataset name, for config_tasks' hf_repo; `qup`: what the file was exported from (config_general.qup)."""
    points = evals[["model_family", "objective", "lr", "batch_size"]].astype(str).drop_duplicates()
    if len(points) != 1:
        raise ValueError(f"{model_name}: expected the rows of one model (family, objective, lr, batch size), got "
                         f"{len(points)}: {points.to_dict('records')}")
    per_bench = evals[evals["benchmark"] != MACRO].sort_values("benchmark")
    if per_bench.empty:
        raise ValueError(f"{model_name}: no benchmark rows")
    if per_bench["benchmark"].duplicated().any():
        raise ValueError(f"{model_name}: a benchmark appears twice: {sorted(per_bench['benchmark'])}")
    ks = set(per_bench["k"].astype(int))
    if len(ks) != 1:
        raise ValueError(f"{model_name}: benchmarks evaluated with different k: {sorted(ks)}")
    k = ks.pop()
    results, versions, config_tasks = {}, {}, {}
    for _, row in per_bench.iterrows():
        task = task_name(row["benchmark"], suite)
        results[task] = _metrics(row, k)
        versions[task] = 0
        config_tasks[task] = {
            "name": row["benchmark"], "suite": [suite], "hf_repo": (sources or {}).get(row["benchmark"]),
            "metrics": [{"metric_name": m, "higher_is_better": True} for m in metric_names(k)],
            "generation_size": (generation or {}).get("max_new_tokens"), "num_samples": [k],
            "original_num_docs": int(row["n_problems"]), "effective_num_docs": int(row["n_problems"]),
            "version": 0,
        }
    macro = evals[evals["benchmark"] == MACRO]
    if len(macro):
        results["all"] = _metrics(macro.iloc[0], k)
    else:  # lighteval's own "all": each metric's mean over the tasks
        results["all"] = {m: (None if any(t[m] is None for t in results.values())
                              else sum(t[m] for t in results.values()) / len(results))
                          for m in next(iter(results.values()))}
    return {
        "config_general": {
            "lighteval_sha": "?", "num_fewshot_seeds": 1, "max_samples": None, "job_id": "",
            "start_time": None, "end_time": None, "total_evaluation_time_secondes": None,
            "model_name": model_name,
            "model_config": {"model_name": model_name, "generation_parameters": generation or {}},
            "qup": qup or {},
        },
        "results": results,
        "versions": versions,
        "config_tasks": config_tasks,
        "summary_tasks": {task: {} for task in versions},  # lighteval's prompt hashes: none here
        "summary_general": {},
    }


def model_name(study: str, family: str, variant: str, objective: str | None = None) -> str:
    """lighteval's "org/model" name: results go to results/<study>/<family>-<variant>[-<objective>]/."""
    return f"{study}/{family}-{variant}" + (f"-{objective}" if objective else "")


def study_lighteval(study, store: Path) -> dict[str, dict]:
    """model name -> lighteval results for a study (qup_assets.study.Study) from its store's eval tables:
    tables/<variant>_eval/<family>.parquet per objective at the training grid's main point (the report's
    Table 1 point), and tables/base_eval/<family>.parquet. Families are the study file's."""

    ev, tr = study.evaluation, study.training
    generation = {"temperature": ev.temperature, "top_p": ev.top_p, "max_new_tokens": ev.max_tokens, "seed": ev.seed}
    sources = {b.name: b.source.name for b in study.benchmarks if b.source.kind == "hf"}  # hub datasets only
    tables = table_dir(store, "base_eval").parent
    variants = sorted(p.name.removesuffix("_eval") for p in tables.glob("*_eval")
                      if p.is_dir() and p.name != "base_eval") if tables.is_dir() else []
    out = {}
    for family, fam in study.families.items():
        student = fam.student.model if fam.student.kind == "hf" else f"synthetic {fam.student.architecture}/{fam.student.style}"

        def qup(variant, objective, lr, batch_size, path):
            return {"study": study.name, "family": family, "variant": variant, "objective": objective,
                    "lr": _num(lr), "batch_size": int(batch_size), "base_model": student,
                    "k": ev.k, "table": str(Path(path).relative_to(store)),
                    "metric": "Avg@k: accuracy over k samples per problem, verified by qup's checker, mean over "
                              "problems; stderr: the 95% bootstrap interval's width / 3.92"}

        base = table_path(store, "base_eval", family)
        if base.is_file():
            df = pd.read_parquet(base)
            name = model_name(study.name, family, "base")
            out[name] = lighteval_results(df, name, generation, sources, qup("base", None, float("nan"), 0, base))
        for variant in variants:
            path = table_path(store, f"{variant}_eval", family)
            if not path.is_file():
                continue
            df = at_main_point(pd.read_parquet(path), tr.lr, tr.batch_size)
            for objective, g in df.groupby("objective", sort=True):
                name = model_name(study.name, family, variant, objective)
                r = g.iloc[0]
                out[name] = lighteval_results(g, name, generation, sources,
                                              qup(variant, objective, r["lr"], r["batch_size"], path))
    return out


def write_lighteval(results: dict[str, dict], out_dir: Path, date_id: str | None = None) -> list[Path]:
    """lighteval's layout: <out>/results/<model name>/results_<date>.json (a rerun adds a newer file, as a
    lighteval rerun does; readers take the latest). Each file appears by rename."""
    date_id = date_id or datetime.now().isoformat().replace(":", "-")
    paths = []
    for name, res in results.items():
        path = Path(out_dir) / "results" / name / f"results_{date_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(res, indent=2, ensure_ascii=False, allow_nan=False), encoding="utf-8")
        tmp.replace(path)
        paths.append(path)
    return paths
