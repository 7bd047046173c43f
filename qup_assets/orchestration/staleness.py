"""What is out of date: code versions and data versions, never timestamps.

Every asset records a data version that is a hash of what it wrote (assets/metadata.py: versioned).
An asset (of one family's partition, or unpartitioned) is out of date when
- it was never materialized, or
- its recorded code version differs from the current one (the code, or a study section it reads), or
- a parent it reads is out of date itself (it will change), or
- a parent's current data version differs from the parent's data version when the asset was last
  materialized: so re-materializing a parent with identical content changes nothing downstream.
This is Dagster's own staleness rule (the UI's "Unsynced"), extended to the report that reads every
family's partition, where Dagster does not compute one (docs/ARCHITECTURE.md).
"""

import dagster as dg

DATA_VERSION_TAG = "dagster/data_version"
CODE_VERSION_TAG = "dagster/code_version"


def latest(instance, key, partition=None, before_storage_id=None):
    """The latest materialization record of an asset (one partition), optionally before a storage id."""
    f = dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None,
                              before_storage_id=before_storage_id)
    recs = instance.fetch_materializations(f, limit=1).records
    return recs[0] if recs else None


def data_version(record) -> str | None:
    return record.asset_materialization.tags.get(DATA_VERSION_TAG) if record else None


def _parent_partitions(graph, instance, parent, child_partition):
    """The partitions of `parent` an asset of `child_partition` reads: the same family, the one
    unpartitioned value, or (for an unpartitioned asset over families, the report) every family."""
    pdef = graph.get(parent).partitions_def
    if pdef is None:
        return [None]
    if child_partition is not None:
        return [child_partition]
    return list(pdef.get_partition_keys(dynamic_partitions_store=instance))


def why_outdated(graph, instance, keys, partition: str | None) -> dict:
    """{asset key: reason} for the assets among `keys` that need materializing for one family (None: the
    unpartitioned ones). Assets not in `keys` are taken as they are (their current data versions)."""
    selected = set(keys)
    todo: dict = {}
    memo: dict = {}

    def current(key, part):  # parents are shared by many children: one query each (a warm `qup run`: 240 -> ~90)
        if (key, part) not in memo:
            memo[key, part] = latest(instance, key, part)
        return memo[key, part]

    for key in graph.toposorted_asset_keys:
        if key not in selected:
            continue
        node = graph.get(key)
        part = partition if node.partitions_def is not None else None
        rec = current(key, part)
        if rec is None:
            todo[key] = "never materialized" + (f" for {part}" if part else "")
            continue
        recorded = rec.asset_materialization.tags.get(CODE_VERSION_TAG)
        if recorded != node.code_version:
            todo[key] = f"code version {recorded} -> {node.code_version}"
            continue
        for parent in sorted(node.parent_keys, key=lambda k: k.to_user_string()):
            if parent in todo:
                todo[key] = f"{parent.to_user_string()} is out of date"
                break
            changed = _changed_parent_partition(graph, instance, parent, part, rec.storage_id, current)
            if changed is not None:
                todo[key] = changed
                break
    return {k: todo[k] for k in keys if k in todo}


def _changed_parent_partition(graph, instance, parent, part, storage_id, current) -> str | None:
    """Why `parent` (of the partitions an asset of `part` reads) changed since the asset's record at `storage_id`;
    `current(key, partition)` is each parent's latest record, asked once per decision."""
    for ppart in _parent_partitions(graph, instance, parent, part):
        now = current(parent, ppart)
        if now is None:
            continue
        if now.storage_id < storage_id:
            continue  # not re-materialized since: the version the asset read is the current one
        seen = latest(instance, parent, ppart, before_storage_id=storage_id)
        label = parent.to_user_string() + (f"[{ppart}]" if ppart else "")
        if seen is None:
            return f"{label} is new since"
        if data_version(now) != data_version(seen):
            return f"{label} changed content"
    return None


def outdated(graph, instance, keys, partition: str | None) -> list:
    """The assets among `keys` that need materializing for one family, in the order of `keys`."""
    return list(why_outdated(graph, instance, keys, partition))


def report_outdated(graph, instance, report_key) -> str | None:
    """Why the report is older than its inputs (None: it is current), for `qup report`."""
    return why_outdated(graph, instance, [report_key], None).get(report_key)
