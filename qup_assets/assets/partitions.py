"""The one partition dimension: model families, one set per study, kept in sync with the study file.

The asset modules declare `model_family` as a placeholder; build_definitions replaces it with the
study's own `<study>_model_family` so two studies in one instance never see each other's families.
"""


import dagster as dg

from qup_assets.study import Study

model_family = dg.DynamicPartitionsDefinition(name="model_family")


def family_partitions(study_name: str) -> dg.DynamicPartitionsDefinition:
    return dg.DynamicPartitionsDefinition(name=f"{study_name}_model_family")


def family_diff(study: Study, instance: dg.DagsterInstance) -> tuple[list[str], list[str]]:
    """(families in the study without a partition, partitions no longer in the study)."""
    existing = set(instance.get_dynamic_partitions(family_partitions(study.name).name))
    wanted = list(study.families)
    return [f for f in wanted if f not in existing], sorted(existing - set(wanted))


def sync_families(study: Study, instance: dg.DagsterInstance) -> list[str]:
    """Add missing family partitions. Families removed from the study keep their partition and data."""
    missing, _ = family_diff(study, instance)
    if missing:
        instance.add_dynamic_partitions(family_partitions(study.name).name, missing)
    return missing
