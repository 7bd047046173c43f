"""Where tables and artifacts live in the store, and atomic Parquet writes.

Each study has its own folder, QUP_STORE/studies/<study name>/, so studies never share a byte.
Inside it, one Parquet file per (asset, partition): tables/<asset>/<partition>.parquet, or
tables/<asset>/_unpartitioned.parquet. Files appear only by rename, so a reader
(or a crashed run) never sees half a file, and many runs can write at once
without any database lock.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

UNPARTITIONED = "_unpartitioned"


def study_store(root: Path, study_name: str) -> Path:
    """A study's own store under the QUP_STORE root: its tables, artifacts, response cache and report."""
    return Path(root) / "studies" / study_name


def table_dir(store: Path, asset: str) -> Path:
    return Path(store) / "tables" / asset


def table_path(store: Path, asset: str, partition: str | None = None) -> Path:
    return table_dir(store, asset) / f"{partition or UNPARTITIONED}.parquet"


def artifact_dir(store: Path, asset: str, partition: str | None = None) -> Path:
    """Folder for large outputs (model folders, plots) of one asset partition."""
    return Path(store) / "artifacts" / asset / (partition or UNPARTITIONED)


def report_dir(store: Path) -> Path:
    """Where a study's paradox report is written (Markdown, HTML, CSVs, PNGs), inside its study store."""
    return Path(store) / "report"


def read_table(store: Path, asset: str, partitions: list[str] | None = None) -> pd.DataFrame:
    """One partition, several (concatenated), or the unpartitioned table."""
    if partitions is None:
        path = table_path(store, asset)
        if not path.is_file():
            raise FileNotFoundError(f"table {asset!r} has not been materialized (expected {path}); "
                                    f"materialize it first: qup run --select key:{asset}")
        return pd.read_parquet(path)
    frames = []
    for key in partitions:
        path = table_path(store, asset, key)
        if not path.is_file():
            raise FileNotFoundError(f"partition {key!r} of {asset!r} has not been materialized (expected {path}); "
                                    f"materialize it first: qup run --family {key} --select key:{asset}")
        frames.append(pd.read_parquet(path))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def content_hash(value) -> str:
    """A hash of what an asset writes (a table's columns, types and rows, or a JSON value), independent of
    when or where it was computed: the data version Dagster and `qup run` compare to decide staleness."""
    import hashlib

    h = hashlib.sha256()
    if isinstance(value, pd.DataFrame):
        import pyarrow as pa

        table = pa.Table.from_pandas(value, preserve_index=False).replace_schema_metadata(None)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        h.update(sink.getvalue().to_pybytes())
    else:
        h.update(json.dumps(value, sort_keys=True, default=str, ensure_ascii=False).encode("utf-8"))
    return h.hexdigest()[:16]
