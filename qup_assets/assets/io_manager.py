"""The Dagster IO manager over the store: DataFrames as atomic Parquet, other values as JSON.

(DuckDBPandasIOManager fails on dynamic partitions and its single-writer lock
breaks parallel runs; see docs/ARCHITECTURE.md.) It only maps asset keys and partitions
to storage/tables.py paths.
"""


import json
from pathlib import Path

import dagster as dg
import pandas as pd

from qup_assets.common import write_json_atomic, write_parquet_atomic
from qup_assets.storage.tables import read_table, table_dir, table_path


class StoreIOManager(dg.ConfigurableIOManager):
    store_dir: str

    def _name(self, key: dg.AssetKey) -> str:
        # store_dir is the study's own folder; the key's prefix is the study's name
        return key.path[-1]

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        if obj is None:
            return
        name = self._name(context.asset_key)
        partition = context.partition_key if context.has_partition_key else None
        if isinstance(obj, pd.DataFrame):
            path = write_parquet_atomic(obj, table_path(Path(self.store_dir), name, partition))
        else:
            path = write_json_atomic(obj, table_path(Path(self.store_dir), name, partition).with_suffix(".json"))
        context.add_output_metadata({"stored_at": dg.MetadataValue.path(str(path))})

    def load_input(self, context: dg.InputContext):
        name = self._name(context.asset_key)
        store = Path(self.store_dir)
        keys = list(context.asset_partition_keys) if context.has_asset_partitions else [None]
        json_paths = {k: table_path(store, name, k).with_suffix(".json") for k in keys}
        if any(p.is_file() for p in json_paths.values()) and not any(table_path(store, name, k).is_file() for k in keys):
            values = {k: json.loads(p.read_text(encoding="utf-8")) for k, p in json_paths.items() if p.is_file()}
            # A partition reading its own partition gets the value; a pooled reader gets {partition: value}
            # of the partitions materialized (the missing ones named, as for tables).
            if keys == [None] or context.has_partition_key:
                if len(values) < len(keys):
                    raise FileNotFoundError(f"{name} is not materialized for {keys}: expected {list(json_paths.values())}")
                return next(iter(values.values()))
            missing = sorted(set(keys) - set(values))
            if missing:
                context.log.warning(f"{name}: partitions {missing} are not materialized; loading {sorted(values)}")
            return values
        if keys == [None]:
            return read_table(store, name)
        present = [k for k in keys if table_path(store, name, k).is_file()]
        missing = sorted(set(keys) - set(present))
        if missing:
            context.log.warning(f"{name}: partitions {missing} are not materialized; loading {present}")
        if not present:
            raise FileNotFoundError(f"no partition of {name!r} is materialized under {table_dir(store, name)}")
        return read_table(store, name, present)
