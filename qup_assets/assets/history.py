"""Carry a pre-namespace store's asset history over to its study's prefixed asset keys.

Before per-study namespaces, assets were keyed `native_samples`; now `<study>/native_samples`. After
`qup store migrate` moves the files, this records each old latest materialization (metadata and code
version) under the new key, parents before children, so nothing that is up to date gets recomputed.
"""

import dagster as dg

from qup_assets.assets.partitions import sync_families
from qup_assets.study import Study


def copy_history(study: Study, instance: dg.DagsterInstance, graph) -> int:
    """Runless materializations for the study's prefixed keys from the old unprefixed ones; returns how many."""
    copied = 0
    sync_families(study, instance)
    for key in graph.toposorted_asset_keys:
        old = dg.AssetKey(key.path[-1])
        node = graph.get(key)
        parts = list(study.families) if node.partitions_def is not None else [None]
        for part in parts:
            f = dg.AssetRecordsFilter(asset_key=old, asset_partitions=[part] if part else None)
            recs = instance.fetch_materializations(f, limit=1).records
            if not recs:
                continue
            m = recs[0].asset_materialization
            instance.report_runless_asset_event(dg.AssetMaterialization(
                asset_key=key, partition=part, metadata={**m.metadata, "migrated_from": old.to_user_string()},
                tags={k: v for k, v in (m.tags or {}).items() if k.startswith("dagster/")}))
            copied += 1
    return copied
