"""The Dagster code location: assets, checks, resources and the family sensor for one study.

The study is chosen by QUP_STUDY (a name under data/studies or a path, default
'tiny') and outputs go under QUP_STORE (default data/store).
"""


import dagster as dg

from qup_assets.assets import problems, quality, report, students, training, variants
from qup_assets.assets.resources import StudyResource
from qup_assets.assets.sensors import build_family_sensor
from qup_assets.storage.io_manager import StoreIOManager
from qup_assets.backends.base import stable_hash
from qup_assets.study import Study, load_study, resolve_study_path, store_root

# The study sections each asset reads directly; a change there changes the asset's code version, so
# the UI shows it (and, through lineage, everything downstream) as stale. Per-family settings are left
# out on purpose: a code version is per asset, and adding a family must not make the others look stale.
STUDY_INPUTS = {
    "problem_pool": ("problems", "verification"),
    "benchmarks": ("benchmarks", "verification"),
    "native_samples": ("sampling", "verification"),
    "native_traces": ("sampling",),
    "reward_model": ("reward_models",),
    **{f"{v}_traces": ("oracle",) for v in variants.VARIANTS},
    **{f"{v}_rewards": ("reward_models",) for v in quality.ALL_VARIANTS},
    **{f"{v}_checkpoints": ("training",) for v in quality.ALL_VARIANTS},
    **{f"{v}_eval": ("evaluation", "verification", "training") for v in quality.ALL_VARIANTS},
    "base_eval": ("evaluation", "verification"),
    "paradox_report": ("training", "evaluation"),
}


def _versioned(assets: list, study: Study) -> list:
    def with_study(spec: dg.AssetSpec) -> dg.AssetSpec:
        sections = STUDY_INPUTS.get(spec.key.to_user_string())
        if not sections:
            return spec
        digest = stable_hash(*[study.model_dump(mode="json").get(k) for k in sections])[:8]
        return spec.replace_attributes(code_version=f"{spec.code_version}-study.{digest}")

    return [a.map_asset_specs(with_study) for a in assets]


def build_definitions(study: str | None = None, store: str | None = None) -> dg.Definitions:
    study_path = str(resolve_study_path(study))
    store_dir = str(store or store_root())
    return dg.Definitions(
        assets=_versioned(dg.load_assets_from_modules([problems, students, variants, quality, training, report]), load_study(study_path)),
        asset_checks=dg.load_asset_checks_from_modules([problems, students, variants]),
        sensors=[build_family_sensor(study_path)],
        resources={
            "study": StudyResource(study=study_path, store_dir=store_dir),
            "io_manager": StoreIOManager(store_dir=store_dir),
        },
    )


defs = build_definitions()
