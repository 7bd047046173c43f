"""The store: atomic Parquet per (asset, partition), DuckDB views, and the IO manager in real Dagster runs."""

import dagster as dg
import pandas as pd
import pytest

from qup_assets.assets.io_manager import StoreIOManager
from qup_assets.common import write_parquet_atomic
from qup_assets.storage.catalog import connect, list_tables, query
from qup_assets.storage.tables import table_path


def test_atomic_write_leaves_only_the_final_file(tmp_path):
    path = table_path(tmp_path, "native_traces", "fam-a")
    write_parquet_atomic(pd.DataFrame({"x": [1, 2]}), path)
    write_parquet_atomic(pd.DataFrame({"x": [3]}), path)  # overwrite is a rename too
    assert [p.name for p in path.parent.iterdir()] == ["fam-a.parquet"]
    assert pd.read_parquet(path)["x"].tolist() == [3]


def test_failed_write_keeps_the_previous_file(tmp_path):
    path = table_path(tmp_path, "t")
    write_parquet_atomic(pd.DataFrame({"x": [1]}), path)
    bad = pd.DataFrame({"x": [object()]})  # pyarrow cannot serialise this
    with pytest.raises(Exception, match="object|convert|type"):  # pyarrow's own complaint about the column
        write_parquet_atomic(bad, path)
    assert pd.read_parquet(path)["x"].tolist() == [1]
    assert [p.name for p in path.parent.iterdir()] == ["_unpartitioned.parquet"]


def test_catalog_views_union_partitions(tmp_path):
    for fam, n in [("fam-a", 2), ("fam-b", 3)]:
        write_parquet_atomic(pd.DataFrame({"model_family": fam, "v": range(n)}), table_path(tmp_path, "scores", fam))
    write_parquet_atomic(pd.DataFrame({"problem_id": ["p1"]}), table_path(tmp_path, "problem_pool"))
    assert list_tables(tmp_path) == ["problem_pool", "scores"]
    df = query(tmp_path, "select model_family, count(*) n from scores group by 1 order by 1")
    assert df.to_dict("records") == [{"model_family": "fam-a", "n": 2}, {"model_family": "fam-b", "n": 3}]
    con = connect(tmp_path)
    assert con.execute("select count(*) from problem_pool").fetchone() == (1,)


def test_io_manager_partitioned_to_unpartitioned(tmp_path):
    """A partitioned asset writes one file per family; an unpartitioned downstream sees all of them."""
    fams = dg.DynamicPartitionsDefinition(name="fam")

    @dg.asset(partitions_def=fams)
    def per_family(context) -> pd.DataFrame:
        return pd.DataFrame({"model_family": [context.partition_key] * 2, "x": [1, 2]})

    @dg.asset
    def pooled(per_family: pd.DataFrame) -> pd.DataFrame:
        return per_family.groupby("model_family", as_index=False)["x"].sum()

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("fam", ["a", "b"])
    resources = {"io_manager": StoreIOManager(store_dir=str(tmp_path))}
    for key in ["a", "b"]:
        assert dg.materialize([per_family], partition_key=key, instance=instance, resources=resources).success
    result = dg.materialize([per_family, pooled], selection=[pooled], instance=instance, resources=resources)
    assert result.success
    out = pd.read_parquet(table_path(tmp_path, "pooled"))
    assert out.sort_values("model_family").to_dict("records") == [{"model_family": "a", "x": 3}, {"model_family": "b", "x": 3}]


# ---------------------------------------------------------------- one namespace per study


def test_a_study_name_is_claimed_by_one_study_file(tmp_path):
    from qup_assets.storage.namespace import NamespaceError, check_claim, claim

    root = tmp_path / "store"
    a, b = tmp_path / "a" / "micro.yaml", tmp_path / "b" / "micro.yaml"
    for p in (a, b):
        p.parent.mkdir()
    a.write_text("name: micro\nproblems: {n: 1}\n")
    assert claim(root, "micro", a) == root / "studies" / "micro"
    a.write_text("name: micro\nproblems: {n: 2}\n")
    claim(root, "micro", a)  # the same file, edited: still its study
    b.write_text(a.read_text())
    claim(root, "micro", b)  # an identical copy elsewhere may use the name
    b.write_text("name: micro\nproblems: {n: 3}\n")
    with pytest.raises(NamespaceError, match=r"already belongs to .*a/micro\.yaml.*same name but different content"):
        check_claim(root, "micro", a)  # b owns it now; a differs
    a.unlink()
    claim(root, "micro", b)  # the other file is gone: no conflict left


def test_the_old_layout_moves_into_its_studys_folder_without_overwriting(tmp_path):
    from qup_assets.storage.namespace import NamespaceError, legacy_layout, migrate_files

    root = tmp_path / "store"
    write_parquet_atomic(pd.DataFrame({"x": [1]}), table_path(root, "problem_pool"))
    (root / "artifacts" / "base_model").mkdir(parents=True)
    (root / "reports" / "tiny").mkdir(parents=True)
    (root / "reports" / "tiny" / "report.md").write_text("tiny")
    (root / "reports" / "micro").mkdir()
    assert legacy_layout(root) == ["tables", "artifacts", "reports"]
    moves = migrate_files(root, "tiny")
    assert {dst.name for _, dst in moves} == {"tables", "artifacts", "report"}
    tiny = root / "studies" / "tiny"
    assert pd.read_parquet(table_path(tiny, "problem_pool"))["x"].tolist() == [1]
    assert (tiny / "report" / "report.md").read_text() == "tiny"
    assert legacy_layout(root) == ["reports"]  # micro's report is still waiting for its own migration
    (root / "tables").mkdir()
    (root / "studies" / "micro" / "tables").mkdir(parents=True)
    with pytest.raises(NamespaceError, match="already there"):
        migrate_files(root, "micro")
    assert (root / "tables").is_dir()  # nothing was moved
