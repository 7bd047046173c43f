"""The study's three stages: shared assets computed once, each family's partition, the report after all."""

from typing import NamedTuple


class Stages(NamedTuple):
    shared: list  # unpartitioned, upstream of every family (problem_pool, reward_model, ...)
    family: list  # partitioned by model_family: one run per family
    after: list  # unpartitioned, downstream of the families (paradox_report)


def split_stages(graph, keys) -> Stages:
    """Split `keys` of an asset graph into its stages, each in topological order."""
    order = {k: i for i, k in enumerate(graph.toposorted_asset_keys)}
    partitioned_all = {k for k in graph.get_all_asset_keys() if graph.get(k).partitions_def is not None}
    keys = sorted(set(keys), key=order.__getitem__)
    family = [k for k in keys if k in partitioned_all]
    after = [k for k in keys if k not in partitioned_all and graph.get_ancestor_asset_keys(k) & partitioned_all]
    shared = [k for k in keys if k not in partitioned_all and k not in after]
    return Stages(shared, family, after)
