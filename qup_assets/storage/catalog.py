"""DuckDB as the SQL engine over the store's Parquet files.

An in-memory DuckDB connection with one view per table directory, named after
the asset key. Nothing is written and no database file is opened, so queries never
hold a lock that could block a run writing new Parquet files.
"""

from __future__ import annotations

from pathlib import Path

from qup_assets.storage.tables import table_dir


def list_tables(store: Path) -> list[str]:
    root = Path(store) / "tables"
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir() if d.is_dir() and any(d.glob("*.parquet")))


def connect(store: Path):
    """A duckdb connection (imported here: a run never needs it, so a GPU machine's wheels can leave it out)."""
    import duckdb

    con = duckdb.connect(":memory:")
    for name in list_tables(store):
        glob = str(table_dir(store, name) / "*.parquet").replace("'", "''")
        con.execute(f"CREATE VIEW \"{name}\" AS SELECT * FROM read_parquet('{glob}', union_by_name = true)")
    return con


def query(store: Path, sql: str):
    """Run one SQL statement over the store; returns a pandas DataFrame."""
    con = connect(store)
    try:
        return con.execute(sql).fetchdf()
    finally:
        con.close()
