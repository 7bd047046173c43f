"""The Dagster code location: assets, checks, resources and the family sensor for one study.

The study is chosen by QUP_STUDY (a name under data/studies or a path, default
'tiny') and outputs go under QUP_STORE (default data/store).
"""


import dagster as dg

from qup_assets.assets import problems, quality, students, variants
from qup_assets.assets.resources import StudyResource
from qup_assets.assets.sensors import build_family_sensor
from qup_assets.storage.io_manager import StoreIOManager
from qup_assets.study import resolve_study_path, store_root


def build_definitions(study: str | None = None, store: str | None = None) -> dg.Definitions:
    study_path = str(resolve_study_path(study))
    store_dir = str(store or store_root())
    return dg.Definitions(
        assets=dg.load_assets_from_modules([problems, students, variants, quality]),
        asset_checks=dg.load_asset_checks_from_modules([problems, students, variants]),
        sensors=[build_family_sensor(study_path)],
        resources={
            "study": StudyResource(study=study_path, store_dir=store_dir),
            "io_manager": StoreIOManager(store_dir=store_dir),
        },
    )


defs = build_definitions()
