"""The `qup` command line on real Dagster instances: run, families, plan, verify."""

import json
import re

import dagster as dg

from qup_assets import variants
from qup_assets.cli import main
from qup_assets.study import resolve_study_path

from .helpers import key, write_study


def test_qup_run_materializes_problems_with_metadata(isolated, capsys):
    assert main(["run", "--study", "micro", "--select", "group:problems"]) == 0
    out = capsys.readouterr().out
    assert "study micro: done" in out and "report:" in out
    instance = dg.DagsterInstance.get()
    assert instance.get_dynamic_partitions("micro_model_family") == ["micro-qwen"]
    for name, rows in [("problem_pool", 60), ("benchmarks", None)]:
        event = instance.get_latest_materialization_event(key(name))
        meta = event.asset_materialization.metadata
        assert {"dagster/row_count", "rejected_by_reason", "sample"} <= set(meta), name
        if rows:
            assert meta["dagster/row_count"].value == rows
    # The runs are in the instance the UI reads.
    assert len(instance.get_runs()) >= 1

    assert main(["sql", "--study", "micro", "select count(*) as n from problem_pool", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 60}]
    assert main(["sql", "--study", "micro", "select benchmark, count(*) n from benchmarks group by 1", "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("benchmark,n\nsynth-micro,")
    assert main(["sql", "--study", "micro", "select * from no_such_table"]) == 1
    assert "tables of study 'micro' in" in capsys.readouterr().err


def test_qup_run_reports_bad_problem_files(isolated, tmp_path, capsys):
    bad = tmp_path / "garbage.jsonl"
    bad.write_text('{"problem": "no answer anywhere", "solution": "none"}\nnot json\n')
    study = write_study(
        tmp_path / "bad.yaml",
        f"name: bad\nproblems: {{kind: local, path: {bad}}}\n"
        "benchmarks: [{name: b, source: {kind: synthetic, size: 5}}]\n"
        "families: {f: {student: {kind: synthetic, style: qwen}}}\n",
    )
    assert main(["run", "--study", str(study)]) == 1
    assert "no usable problems remain out of 2 rows" in capsys.readouterr().err


def test_families_sync_list_and_removal_keeps_partitions(isolated, tmp_path, capsys):
    text = resolve_study_path("micro").read_text()
    study = write_study(tmp_path / "s.yaml", text)
    assert main(["families", "list", "--study", str(study)]) == 0
    assert "micro-qwen\tmissing" in capsys.readouterr().out
    assert main(["families", "sync", "--study", str(study)]) == 0
    assert "added: ['micro-qwen']" in capsys.readouterr().out
    write_study(study, text.replace("micro-qwen:", "micro-llama:"))
    assert main(["families", "sync", "--study", str(study)]) == 0
    out = capsys.readouterr().out
    assert "micro-llama\tpartition" in out and "micro-qwen\tpartition only" in out
    assert set(dg.DagsterInstance.get().get_dynamic_partitions("micro_model_family")) == {"micro-qwen", "micro-llama"}


def test_plan_sizes_the_paper_study(isolated, capsys):
    assert main(["plan", "--study", "paper"]) == 0
    out = capsys.readouterr().out
    assert "qwen2.5-math-1.5b" in out and "backend=vllm" in out
    # 100K problems x N=8 x 4 families
    assert "3,200,000" in out
    # the registry's 6 variants x 2 objectives x 4 grid points = 48 checkpoints per family, 192 in all
    assert len(variants.names()) == 6
    assert re.search(r"fine-tuned checkpoints +192\n", out)
    # evaluation is sized before the benchmarks are on disk: 500 + 272 + 30 + 40 + 675 published items
    assert re.search(r"benchmark items \(published sizes\) +1,517", out)
    assert re.search(r"eval samples .* 4,757,312", out)  # (1 + 48) x 1,517 x k=16 x 4 families
    # H100 hours: 8 x 100K samples x 1536 tokens at 3.7k tokens/s for the 1.5B model; 7B scales by 7/1.5
    assert "qwen2.5-math-1.5b (1.5B)\n      sampling 92 h" in out and "qwen2.5-math-7b (7B)\n      sampling 431 h" in out
    assert re.search(r"all stages, all families +[\d,]+ h", out)


def test_qup_verify_checks_a_file_of_disputed_pairs_and_skips_bad_lines(tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join([
        json.dumps({"id": "a", "gold": "1/2", "pred": "so \\boxed{\\frac{2}{4}}"}),
        json.dumps({"id": "b", "gold": "3", "pred": "the answer is \\boxed{4}"}),
        "{not json",
        json.dumps({"id": "c", "gold": "3"}),
        json.dumps(["gold", "pred"]),
        json.dumps({"id": 7, "gold": 12, "pred": "\\boxed{9^9^9^9}"}),  # hostile: rejected, not computed
        "",
    ]))
    assert main(["verify", "--file", str(pairs)]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    rows = {r["id"]: r for r in out if "id" in r}
    assert rows["a"]["verdict"] == "correct" and rows["b"]["verdict"] == "wrong" and rows[7]["verdict"] == "rejected"
    assert [r["line"] for r in out if "skipped" in r] == [3, 4, 5]
    assert "gold and pred" in out[1]["skipped"]
    assert out[-1]["summary"] == {"pairs": 3, "correct": 1, "verdicts": {"correct": 1, "rejected": 1, "wrong": 1},
                                  "skipped_lines": 3}
    assert main(["verify", "--file", str(tmp_path / "missing.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_qup_verify_prints_json(capsys):
    assert main(["verify", "1/2", "so \\boxed{\\frac{2}{4}}"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["verdict"] == "correct" and res["extracted"] == "\\frac{2}{4}"
    assert main(["verify", "3", "\\boxed{9^9^9^9}"]) == 1
    assert json.loads(capsys.readouterr().out)["verdict"] == "rejected"


def test_run_rejects_unknown_family(isolated, capsys):
    assert main(["run", "--study", "micro", "--family", "nope"]) == 2
    assert "not in study" in capsys.readouterr().err


def test_a_second_study_file_with_the_same_name_is_refused_before_anything_is_written(isolated, tmp_path, capsys):
    first = write_study(tmp_path / "first.yaml", resolve_study_path("micro").read_text())
    assert main(["run", "--study", str(first), "--select", "key:problem_pool"]) == 0
    store = isolated / "store"
    before = {p: p.stat().st_mtime_ns for p in store.rglob("*")}
    other = write_study(tmp_path / "other.yaml", first.read_text().replace("size: 60,", "size: 30,"))
    capsys.readouterr()
    assert main(["run", "--study", str(other), "--select", "key:problem_pool"]) == 2
    err = capsys.readouterr().err
    assert "study name 'micro'" in err and "already belongs to" in err and str(first) in err
    assert {p: p.stat().st_mtime_ns for p in store.rglob("*")} == before  # not a byte written
    assert main(["plan", "--study", str(other)]) == 2  # every command that builds the study refuses it


def test_a_store_with_the_old_layout_is_refused_with_the_migrate_command(isolated, capsys):
    (isolated / "store" / "tables" / "problem_pool").mkdir(parents=True)
    assert main(["run", "--study", "micro"]) == 2
    assert "qup store migrate --study NAME" in capsys.readouterr().err
