"""Markdown tables from DataFrames: one writer for the UI's metadata and for the report."""

from __future__ import annotations

import pandas as pd


def _cell(v, width: int | None, na: str) -> str:
    s = na if v is None or (isinstance(v, float) and pd.isna(v)) else str(v)
    s = s.replace("\n", " ").replace("|", "\\|")
    return s if width is None or len(s) <= width else s[: width - 1] + "…"


def markdown_table(df: pd.DataFrame, max_rows: int | None = 10, width: int | None = 80, na: str = "") -> str:
    """A pipe table; `max_rows`/`width` (None: no limit) keep UI metadata short, `na` is how a missing value reads."""
    if df.empty:
        return "_(no rows)_"
    head = df if max_rows is None else df.head(max_rows)
    lines = ["| " + " | ".join(map(str, head.columns)) + " |", "|" + "---|" * len(head.columns)]
    for row in head.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v, width, na) for v in row) + " |")
    if len(df) > len(head):
        lines.append(f"\n_{len(df) - len(head)} more rows_")
    return "\n".join(lines)
