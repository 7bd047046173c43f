"""`qup export --format lighteval`: the eval tables as lighteval results JSON, one file per trained model and
one per base model, the values exactly the tables' (no study is run: the tables are written here)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qup_assets.cli import main
from qup_assets.evaluation.metrics import EVAL_COLUMNS, eval_table
from qup_assets.report.export import Z95
from qup_assets.storage.tables import table_path

# data/studies/micro.yaml: family micro-qwen, training lr 1e-3 and batch size 16, Avg@2
STUDY, FAMILY, LR, BS, K = "micro", "micro-qwen", 1.0e-3, 16, 2
TOP_LEVEL = {"config_general", "results", "versions", "config_tasks", "summary_tasks", "summary_general"}


def _table(p_correct: float, seed: int, **ident) -> pd.DataFrame:
    """An eval table as evaluation/metrics.py makes it: two benchmarks and the macro row, k samples a problem."""
    rng = np.random.default_rng(seed)
    samples = pd.DataFrame([{"benchmark": b, "problem_id": f"{b}-{i}", "correct": bool(rng.random() < p_correct),
                             "verdict": "correct", "finish_reason": "stop", "n_tokens": 50}
                            for b in ("synth-a", "synth-b") for i in range(12) for _ in range(K)])
    return eval_table(samples, K, bootstrap_samples=100, seed=seed).assign(**ident)[EVAL_COLUMNS]


def _put(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False)


@pytest.fixture
def store(isolated):
    store = isolated / "store" / "studies" / STUDY
    _put(_table(0.3, 0, model_family=FAMILY, objective="none", lr=float("nan"), batch_size=0),
                         table_path(store, "base_eval", FAMILY))
    for i, variant in enumerate(["native", "style_aligned"]):
        grid = [_table(0.4 + 0.1 * i + 0.05 * j, 10 * i + j, model_family=FAMILY, objective=o, lr=lr, batch_size=BS)
                for j, (o, lr) in enumerate([("sft", LR), ("dft", LR), ("sft", 5e-4)])]  # 5e-4: not the main point
        _put(pd.concat(grid, ignore_index=True), table_path(store, f"{variant}_eval", FAMILY))
    # a family no longer in the study file: its data is kept in the store but not exported
    _put(_table(0.9, 99, model_family="gone", objective="sft", lr=LR, batch_size=BS),
                         table_path(store, "native_eval", "gone"))
    return store


def _strict(text: str) -> dict:
    def no_nan(c):
        raise AssertionError(f"not JSON: {c}")

    return json.loads(text, parse_constant=no_nan)


def test_export_writes_lighteval_results_equal_to_the_eval_tables(store, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["export", "--study", STUDY, "--format", "lighteval", "--out", str(out)]) == 0
    files = sorted(out.glob("results/*/*/results_*.json"))
    assert [str(p) for p in files] == sorted(capsys.readouterr().out.split())  # it prints what it wrote
    by_model = {p.parent.relative_to(out / "results").as_posix(): _strict(p.read_text()) for p in files}
    assert set(by_model) == {f"{STUDY}/{FAMILY}-base"} | {f"{STUDY}/{FAMILY}-{v}-{o}" for v in ("native", "style_aligned")
                                                          for o in ("sft", "dft")}

    for name, res in by_model.items():
        assert set(res) == TOP_LEVEL, name
        assert res["config_general"]["model_name"] == name
        q = res["config_general"]["qup"]
        variant, objective = q["variant"], q["objective"]
        table = pd.read_parquet(table_path(store, f"{variant}_eval", FAMILY))
        if variant != "base":
            assert q["lr"] == LR and q["batch_size"] == BS  # the main grid point
            table = table[(table["objective"] == objective) & (table["lr"] == LR)]
        tasks = {"custom|synth-a|0", "custom|synth-b|0"}
        assert set(res["results"]) == tasks | {"all"} and set(res["versions"]) == tasks == set(res["config_tasks"])
        assert len(table) == len(tasks) + 1  # each benchmark and the macro average
        for _, row in table.iterrows():
            got = res["results"]["all" if row["benchmark"] == "macro" else f"custom|{row['benchmark']}|0"]
            assert got["extractive_match"] == row["avg_at_k"] and got[f"avg@n:n={K}"] == row["avg_at_k"]
            assert got["extractive_match_stderr"] == pytest.approx((row["ci_high"] - row["ci_low"]) / (2 * Z95))
            assert got[f"pass@k:k={K}&n={K}"] == row["pass_at_k"]
            if row["benchmark"] != "macro":
                cfg = res["config_tasks"][f"custom|{row['benchmark']}|0"]
                assert cfg["name"] == row["benchmark"] and cfg["effective_num_docs"] == row["n_problems"] == 12
                assert cfg["num_samples"] == [K] and cfg["generation_size"] == 128  # micro's max_tokens
        # lighteval's "all" is each metric's mean over the tasks: so is the macro row
        assert res["results"]["all"]["extractive_match"] == pytest.approx(
            np.mean([res["results"][t]["extractive_match"] for t in tasks]))
    assert by_model[f"{STUDY}/{FAMILY}-base"]["config_general"]["qup"]["lr"] is None  # NaN in the table: null


def test_export_refuses_unknown_formats_and_says_when_there_is_nothing_to_export(isolated, tmp_path, capsys):
    assert main(["export", "--study", STUDY, "--format", "csv", "--out", str(tmp_path / "o")]) == 2
    assert "unknown export format 'csv'" in capsys.readouterr().err
    assert main(["export", "--study", STUDY, "--out", str(tmp_path / "o")]) == 1  # no tables in the isolated store
    assert "no eval tables for study 'micro'" in capsys.readouterr().err
    assert not Path(tmp_path / "o").exists()
