"""Metadata helpers: tables with their column schema, markdown tables and embedded plots that the UI can show."""


import base64
import io
import warnings

import dagster as dg
import pandas as pd

from qup_assets.columns import describe, lineage
from qup_assets.markdown import markdown_table
from qup_assets.storage.tables import content_hash


def md_table(df: pd.DataFrame, max_rows: int = 10, width: int = 80) -> dg.MetadataValue:
    return dg.MetadataValue.md(markdown_table(df, max_rows, width))


def column_schema(df: pd.DataFrame, asset: str | None = None) -> dg.TableSchema:
    """The columns of a table asset, their types and what each means, for the catalog's column view
    (`dagster/column_schema`) and the UI tables. Descriptions live in qup_assets/columns.py, keyed by column name
    with per-kind overrides; the table's kind is told from its columns, so `versioned(df)` and `table(df)` need
    no asset name (`asset` names it where a caller knows better)."""
    notes = describe(df.columns, asset)
    return dg.TableSchema(columns=[dg.TableColumn(name=str(c), type=str(t), description=notes[str(c)] or None)
                                   for c, t in df.dtypes.items()])


def _cell(v):
    if v is None or (isinstance(v, float) and v != v):
        return None
    if hasattr(v, "item"):  # numpy scalars
        v = v.item()
    return v if isinstance(v, (str, int, float, bool)) else str(v)


def table(df: pd.DataFrame, max_rows: int = 60) -> dg.MetadataValue:
    """A table the UI renders with typed, sortable columns (the first `max_rows` rows)."""
    head = df.head(max_rows)
    records = [dg.TableRecord({str(k): _cell(v) for k, v in row.items()}) for row in head.to_dict("records")]
    return dg.MetadataValue.table(records, schema=column_schema(head))


def counts_table(counts: dict, key: str = "reason", value: str = "count") -> dg.MetadataValue:
    return md_table(pd.DataFrame({key: list(counts), value: list(counts.values())}), max_rows=50)


def png_markdown(fig, title: str = "") -> str:
    """A matplotlib figure as a self-contained markdown image (MetadataValue has no image type)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f"![{title}](data:image/png;base64,{data})"


def plot_markdown(draw, title: str, figsize=(5, 3)) -> str:
    """Draw on a fresh matplotlib Axes with `draw(ax)` and return it as an embedded markdown image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize)
    draw(ax)
    ax.set_title(title)
    md = png_markdown(fig, title)
    plt.close(fig)
    return md


def column_lineage(context, df: pd.DataFrame) -> dict:
    """`dagster/column_lineage` for a table its asset computed from its inputs' columns (columns.LINEAGE), with
    each input's asset key as the asset sees it (a study's key prefix included); {} when nothing is computed.
    The open-source UI draws column lineage only in Dagster+, so the same is also a small table
    (`column_lineage`: column, computed from) that every UI shows."""
    keys = context.assets_def.keys_by_input_name
    own = list(context.assets_def.keys)
    deps = lineage(df.columns, keys, own[0].path[-1] if len(own) == 1 else None)
    if not deps:
        return {}
    shown = pd.DataFrame({"column": list(deps), "computed from": [
        ", ".join(f"{keys[i].to_user_string()}.{c}" for i, c in sources) for sources in deps.values()]})
    return {"dagster/column_lineage": dg.TableColumnLineage({
        col: [dg.TableColumnDep(asset_key=keys[i], column_name=c) for i, c in sources] for col, sources in deps.items()
    }), "column_lineage": md_table(shown, max_rows=40, width=200)}


def versioned(value, metadata: dict | None = None, output_name: str = "result", context=None) -> dg.Output:
    """An asset's value with its content hash as data version: re-materializing identical content is no
    change for Dagster's staleness (the UI) or for `qup run`, so nothing downstream recomputes. A table shows
    its columns in the catalog; with the asset's `context`, also which input columns each computed column
    comes from."""

    warnings.filterwarnings("ignore", message=".*data_version.*", category=dg.BetaWarning)
    if isinstance(value, pd.DataFrame):  # every table asset shows its columns in the catalog
        metadata = {"dagster/column_schema": column_schema(value),
                    **(column_lineage(context, value) if context is not None else {}), **(metadata or {})}
    return dg.Output(value, output_name=output_name, data_version=dg.DataVersion(content_hash(value)),
                     metadata=metadata)
