"""The jobs a user picks in the UI: what each stage of `qup run` launches, with the same names."""

import dagster as dg

from qup_assets.assets.partitions import family_partitions
from qup_assets.study import Study

FAMILY_JOB, SHARED_JOB, REPORT_JOB = "family_assets", "shared_assets", "paradox_report_job"


def study_jobs(study: Study, assets: list[dg.AssetsDefinition]) -> list:
    """family_assets (partitioned: pick families in the partition picker; several = a backfill),
    shared_assets (computed once for all families) and paradox_report_job."""
    family = dg.AssetSelection.assets(*[s.key for a in assets for s in a.specs if s.partitions_def is not None])
    after = family.downstream() - family
    return [
        dg.define_asset_job(FAMILY_JOB, selection=family,
                            partitions_def=family_partitions(study.name),
                            description="One family's assets, from its samples to its evaluations: pick the "
                            "family (or several, for a backfill) in the partition picker."),
        dg.define_asset_job(SHARED_JOB, selection=dg.AssetSelection.all() - family - after,
                            description="The assets every family shares: problems, benchmarks, the reward model."),
        dg.define_asset_job(REPORT_JOB, selection=after,
                            description="The paradox report over every family in the study file."),
    ]
