"""Problem sources -> one clean table: the synthetic world, a Hugging Face dataset, or a local file.

Rows are untrusted: a row without a problem or with an unusable gold answer is
rejected with a reason (and counted), duplicates are dropped (and counted), and
the load fails only when nothing usable remains. Gold answers are checked by
verifying them against themselves in the hardened verifier, so an answer that
cannot be parsed never reaches training or evaluation.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from qup_assets.common import problem_id
from qup_assets.mathcore.extract import answer_from_solution, clean_text, gold_from_cell
from qup_assets.mathcore.verify import VerifierPool
from qup_assets.study import FieldMap, HFSource, LocalSource, Source, Study, SyntheticSource
from qup_assets.world.generator import generate

POOL_COLUMNS = ["problem_id", "problem", "answer", "reference_solution", "program", "n_steps", "source"]
REJECT_COLUMNS = ["row", "reason", "problem_preview"]


class ProblemSourceError(RuntimeError):
    """A source that cannot be read or that leaves no usable problem."""


@dataclass
class ProblemSet:
    rows: pd.DataFrame
    rejected: pd.DataFrame
    n_raw: int
    n_duplicates: int
    label: str
    notes: list[str] = field(default_factory=list)

    def reject_counts(self) -> dict[str, int]:
        if self.rejected.empty:
            return {}
        return self.rejected["reason"].str.split(":").str[0].value_counts().to_dict()


def world_difficulty(study: Study) -> dict:
    """Generator knobs matching the study's pool, for corpora generated beside it (student pretraining, RM pairs)."""
    src = study.problems
    if isinstance(src, SyntheticSource):
        return {"min_steps": src.min_steps, "max_steps": src.max_steps, "max_operand": src.max_operand}
    return {"min_steps": 2, "max_steps": 4, "max_operand": 20}


# ---------------------------------------------------------------- raw rows per source kind


def _synthetic_rows(src: SyntheticSource) -> tuple[pd.DataFrame, str]:
    # Over-generate: duplicates are removed in cleaning and the pool still gets `size` rows.
    problems = generate(int(src.size * 1.5) + 16, src.seed, src.min_steps, src.max_steps, src.max_operand)
    df = pd.DataFrame(
        {
            "problem": [p.problem for p in problems],
            "solution": [p.reference_solution for p in problems],
            "answer": [p.answer for p in problems],
            "program": [p.program.to_json() for p in problems],
            "n_steps": [len(p.program.steps) for p in problems],
        }
    )
    return df, f"synthetic(seed={src.seed}, steps={src.min_steps}-{src.max_steps}, max_operand={src.max_operand})"


def _map_fields(df: pd.DataFrame, fields: FieldMap, label: str) -> pd.DataFrame:
    missing = [c for c in (fields.problem, fields.solution, fields.answer, fields.id) if c and c not in df.columns]
    if missing:
        raise ProblemSourceError(
            f"{label}: column(s) {missing} named in the study's field mapping are not in the data; "
            f"available columns: {sorted(map(str, df.columns))}"
        )
    out = pd.DataFrame({"problem": df[fields.problem]})
    out["solution"] = df[fields.solution] if fields.solution else None
    out["answer"] = df[fields.answer] if fields.answer else None
    out["program"] = None
    out["n_steps"] = pd.NA
    return out


def _hf_rows(src: HFSource) -> tuple[pd.DataFrame, str]:
    import datasets

    label = f"hf:{src.name}" + (f"/{src.config}" if src.config else "") + f"[{src.split}]"
    try:
        ds = datasets.load_dataset(src.name, src.config, split=src.split)
    except Exception as e:  # offline hub miss, bad split, corrupt files: say what to do
        raise ProblemSourceError(
            f"{label}: could not load the dataset ({type(e).__name__}: {str(e)[:300]}). "
            "Model weights and datasets are never fetched at run time: download it on a machine with "
            f"internet (`hf download --repo-type dataset {src.name}`) into the HF cache, "
            "or point `name` at a local folder of json/parquet files."
        ) from None
    return _map_fields(ds.to_pandas(), src.fields, label), label


def _local_rows(src: LocalSource, study: Study | None) -> tuple[pd.DataFrame, str]:
    path = study.resolve_path(src.path) if study else Path(src.path)
    label = f"local:{path}"
    if not path.is_file():
        raise ProblemSourceError(f"{label}: file not found")
    try:
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
        else:
            df = _read_jsonl(path)
    except ProblemSourceError:
        raise
    except Exception as e:
        raise ProblemSourceError(f"{label}: could not read ({type(e).__name__}: {str(e)[:300]})") from None
    return _map_fields(df, src.fields, label), label


def _read_jsonl(path: Path) -> pd.DataFrame:
    """JSON lines, tolerant of garbage: a line that is not a JSON object becomes an empty row (rejected later)."""
    import json

    records = []
    with path.open("rb") as f:
        for line in f:
            text = line.decode("utf-8", errors="replace").strip()
            if not text:
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError:
                obj = {"__unparsable_line__": text[:80]}
            records.append(obj if isinstance(obj, dict) else {"__unparsable_line__": text[:80]})
    if not records:
        raise ProblemSourceError(f"local:{path}: no rows")
    return pd.DataFrame.from_records(records)


def raw_rows(src: Source, study: Study | None = None) -> tuple[pd.DataFrame, str]:
    if isinstance(src, SyntheticSource):
        return _synthetic_rows(src)
    if isinstance(src, HFSource):
        return _hf_rows(src)
    return _local_rows(src, study)


# ---------------------------------------------------------------- cleaning


def _as_text(v, join: str | None = None) -> str | None:
    """A cell as text; a list cell (numpy arrays from HF/parquet) is joined with `join`, or None without one."""
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return None
    if isinstance(v, (list, tuple, np.ndarray)):
        return (join.join(t for t in map(_as_text, v) if t) or None) if join is not None else None
    if isinstance(v, dict):
        return None
    s = clean_text(v).strip()
    return s or None


_E_NOTATION = re.compile(r"([-+]?\d+(?:\.\d+)?)[eE]([-+]?\d+)")


def _gold_answer(answer_cell, solution: str | None) -> str | None:
    """The gold answer: the answer column (mathcore.extract.gold_from_cell), else the solution's final \\boxed{}.

    A list answer (OlympiadBench `final_answer`: ["$1$", "$3$"]) becomes "1, 3", each item normalized
    first, never str(list). A plain e-notation answer (Minerva "4.4e7") is written as LaTeX: math-verify
    reads 4.4e7 as 4.4*e*7 (Euler's number). An integer stored in a float column (AMC23: 27.0) is "27".
    """
    if isinstance(answer_cell, float) and answer_cell.is_integer():
        answer_cell = int(answer_cell)
    if isinstance(answer_cell, (list, tuple, np.ndarray)):
        answer = ", ".join(a for a in (gold_from_cell(t) for t in map(_as_text, answer_cell) if t) if a)
    else:
        text = _as_text(answer_cell)
        answer = gold_from_cell(text) if text else None
    answer = answer or answer_from_solution(solution)
    m = _E_NOTATION.fullmatch(answer or "")
    return f"{m.group(1)} \\times 10^{{{int(m.group(2))}}}" if m else answer


def clean_rows(raw: pd.DataFrame, label: str, verifier: VerifierPool, size: int | None, seed: int,
               max_problem_chars: int = 20_000) -> ProblemSet:
    """Reject bad rows with reasons, drop duplicates, and keep `size` rows in a seeded order."""
    order = list(range(len(raw)))
    if size is not None and size < len(raw):
        random.Random(seed).shuffle(order)
    kept: list[dict] = []
    rejected: list[dict] = []
    seen: set[str] = set()
    n_dupes = 0
    candidates: list[dict] = []
    for i in order:
        r = raw.iloc[i]
        problem = _as_text(r["problem"])
        if problem is None:
            rejected.append({"row": i, "reason": "missing_problem", "problem_preview": ""})
            continue
        if len(problem) > max_problem_chars:
            rejected.append({"row": i, "reason": f"problem_too_long: {len(problem)} chars", "problem_preview": problem[:80]})
            continue
        solution = _as_text(r["solution"], join="\n\n")
        answer = _gold_answer(r["answer"], solution)
        if not answer:
            why = "no_gold_answer: no answer field and no \\boxed{} in the solution"
            rejected.append({"row": i, "reason": why, "problem_preview": problem[:80]})
            continue
        pid = problem_id(problem)
        if pid in seen:
            n_dupes += 1
            continue
        seen.add(pid)
        candidates.append({"row": i, "problem_id": pid, "problem": problem, "answer": answer,
                           "reference_solution": solution, "program": r["program"], "n_steps": r["n_steps"]})
    # Self-verification of the gold answers, in chunks so a size-limited pull of a huge dataset stays cheap.
    chunk = max(64, (size or len(candidates)) // 4 or 64)
    pos = 0
    while pos < len(candidates) and (size is None or len(kept) < size):
        batch = candidates[pos : pos + chunk]
        pos += chunk
        checks = verifier.check_golds(c["answer"] for c in batch)
        for c, res in zip(batch, checks):
            if size is not None and len(kept) >= size:
                break
            if res.verdict == "correct":
                kept.append(c)
            else:
                rejected.append({"row": c["row"], "reason": f"unusable_gold_answer: {res.reason}",
                                 "problem_preview": c["problem"][:80]})
    rows = pd.DataFrame(kept, columns=["row"] + POOL_COLUMNS[:-1]).drop(columns="row")
    rows["source"] = label
    rows["n_steps"] = rows["n_steps"].astype("Int64")
    rows["reference_solution"] = rows["reference_solution"].astype("string")
    rows["program"] = rows["program"].astype("string")
    rejected_df = pd.DataFrame(rejected, columns=REJECT_COLUMNS)
    result = ProblemSet(rows.reset_index(drop=True), rejected_df, len(raw), n_dupes, label)
    if size is not None and len(rows) < size:
        result.notes.append(f"asked for {size} problems, only {len(rows)} usable")
    return result


def changed_golds(before: pd.DataFrame | None, after: pd.DataFrame, keys: tuple[str, ...] = ("problem_id",)) -> int:
    """How many problems kept in both tables have a different gold answer (a new answer checker re-derives
    golds: the run log says how many moved, so a changed number downstream has a visible cause)."""
    if before is None or before.empty or "answer" not in before:
        return 0
    joined = before[[*keys, "answer"]].merge(after[[*keys, "answer"]], on=list(keys), suffixes=("_before", "_after"))
    return int((joined["answer_before"].astype(str) != joined["answer_after"].astype(str)).sum())


def load_problems(src: Source, verifier: VerifierPool, study: Study | None = None) -> ProblemSet:
    raw, label = raw_rows(src, study)
    result = clean_rows(raw, label, verifier, getattr(src, "size", None), getattr(src, "seed", 0))
    if result.rows.empty:
        counts = result.reject_counts()
        raise ProblemSourceError(
            f"{label}: no usable problems remain out of {result.n_raw} rows "
            f"(rejected: {counts or 'none'}, duplicates: {result.n_duplicates})"
        )
    return result


def load_benchmarks(study: Study, verifier: VerifierPool, pool_ids: set[str]) -> dict[str, ProblemSet]:
    """Each benchmark cleaned like the pool, then decontaminated: items also in the pool are dropped."""
    out = {}
    for bench in study.benchmarks:
        raw, label = raw_rows(bench.source, study)
        result = clean_rows(raw, label, verifier, getattr(bench.source, "size", None), getattr(bench.source, "seed", 0))
        leaked = result.rows["problem_id"].isin(pool_ids)
        if leaked.any():
            leaks = pd.DataFrame({"row": -1, "reason": "in_problem_pool: contaminated, dropped",
                                  "problem_preview": result.rows.loc[leaked, "problem"].str[:80]})
            result.rejected = pd.concat([result.rejected, leaks], ignore_index=True)
            result.rows = result.rows[~leaked].reset_index(drop=True)
        if result.rows.empty:
            raise ProblemSourceError(
                f"benchmark {bench.name!r} ({label}): no usable problems remain out of {result.n_raw} rows "
                f"(rejected: {result.reject_counts() or 'none'}, duplicates: {result.n_duplicates})"
            )
        result.rows.insert(0, "benchmark", bench.name)
        out[bench.name] = result
    return out
