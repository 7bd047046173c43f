"""Keeps the study's model_family partitions in sync with the study file while the UI's daemon runs."""


import dagster as dg

from qup_assets.assets.partitions import family_diff, family_partitions
from qup_assets.study import StudyError, load_study


def build_family_sensor(study_ref: str, study_name: str) -> dg.SensorDefinition:
    @dg.sensor(
        name=f"{study_name}_family_partitions_sensor",
        description="Adds a model_family partition for every family in the study file (re-read each tick).",
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def _sensor(context: dg.SensorEvaluationContext):
        try:
            study = load_study(study_ref)
        except StudyError as e:
            return dg.SkipReason(f"study file is invalid, partitions left as they are:\n{e}")
        missing, orphaned = family_diff(study, context.instance)
        if not missing:
            note = f" (partitions kept for removed families: {orphaned})" if orphaned else ""
            return dg.SkipReason(f"all {len(study.families)} families have partitions{note}")
        context.log.info(f"adding model_family partitions: {missing}")
        return dg.SensorResult(dynamic_partitions_requests=[family_partitions(study.name).build_add_request(missing)])

    return _sensor
