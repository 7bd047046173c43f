"""Inputs an asset cannot work without: an empty one fails the asset with one clear error that names the upstream
asset and why it is empty, never a KeyError or a misleading guess further down."""

import dagster as dg
import pandas as pd

from qup_assets.variants import EmptyCommonSet, on_common_set


def common_traces(traces: pd.DataFrame, common_problems: pd.DataFrame) -> pd.DataFrame:
    """A variant's traces on the family's common problem set (variants.on_common_set), or a Failure saying it is empty."""
    try:
        return on_common_set(traces, common_problems)
    except EmptyCommonSet as e:
        raise dg.Failure(description=str(e)) from None


def require_rows(df: pd.DataFrame, upstream: str, why: str) -> pd.DataFrame:
    if df.empty:
        raise dg.Failure(description=f"{upstream} is empty: {why}")
    return df
