"""`qup`'s own rules, tested directly on a real Dagster instance: what counts as out of date."""

import dagster as dg

from qup_assets.cli import outdated

FAMILIES = dg.StaticPartitionsDefinition(["fam-a", "fam-b"])


def _defs(per_family_version: str = "1") -> dg.Definitions:
    @dg.asset(code_version="1")
    def pool() -> int:
        return 1

    @dg.asset(code_version=per_family_version, partitions_def=FAMILIES)
    def samples(pool: int) -> int:
        return pool + 1

    @dg.asset(code_version="1", partitions_def=FAMILIES)
    def scores(samples: int) -> int:
        return samples + 1

    return dg.Definitions(assets=[pool, samples, scores])


def _stale(defs, instance, family):
    graph = defs.resolve_asset_graph()
    keys = [k for k in graph.toposorted_asset_keys if graph.get(k).partitions_def is not None]
    return [k.to_user_string() for k in outdated(graph, instance, keys, family)]


def _materialize(defs, instance, names, family=None):
    assets = [a for a in defs.assets if a.key.to_user_string() in names]
    others = [a for a in defs.assets if a.key.to_user_string() not in names]
    result = dg.materialize(assets + [a.to_source_asset() for a in others], instance=instance, partition_key=family)
    assert result.success


def test_nothing_is_outdated_after_a_full_run_and_missing_partitions_are():
    with dg.instance_for_test() as instance:
        defs = _defs()
        _materialize(defs, instance, {"pool"})
        assert _stale(defs, instance, "fam-a") == ["samples", "scores"]  # never materialized
        for fam in ("fam-a", "fam-b"):
            _materialize(defs, instance, {"samples", "scores"}, fam)
        assert _stale(defs, instance, "fam-a") == [] and _stale(defs, instance, "fam-b") == []
        graph = defs.resolve_asset_graph()
        assert outdated(graph, instance, [dg.AssetKey("pool")], None) == []


def test_a_code_version_change_reruns_the_asset_and_its_descendants_in_each_family_separately():
    with dg.instance_for_test() as instance:
        v1 = _defs("1")
        _materialize(v1, instance, {"pool"})
        for fam in ("fam-a", "fam-b"):
            _materialize(v1, instance, {"samples", "scores"}, fam)
        v2 = _defs("2")  # samples' code (or the study section it reads) changed
        assert _stale(v2, instance, "fam-a") == ["samples", "scores"]
        assert _stale(v2, instance, "fam-b") == ["samples", "scores"]
        _materialize(v2, instance, {"samples", "scores"}, "fam-a")
        assert _stale(v2, instance, "fam-a") == []
        assert _stale(v2, instance, "fam-b") == ["samples", "scores"]  # the other family is untouched
        graph = v2.resolve_asset_graph()
        assert outdated(graph, instance, [dg.AssetKey("pool")], None) == []  # nothing upstream moves


def test_a_newer_parent_makes_every_family_outdated_but_not_its_parent():
    with dg.instance_for_test() as instance:
        defs = _defs()
        _materialize(defs, instance, {"pool"})
        for fam in ("fam-a", "fam-b"):
            _materialize(defs, instance, {"samples", "scores"}, fam)
        _materialize(defs, instance, {"scores"}, "fam-a")  # a newer child does not make its parent stale
        assert _stale(defs, instance, "fam-a") == []
        _materialize(defs, instance, {"pool"})  # the shared root was recomputed
        assert _stale(defs, instance, "fam-a") == ["samples", "scores"]
        assert _stale(defs, instance, "fam-b") == ["samples", "scores"]
