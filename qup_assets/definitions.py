"""The Dagster code location of one study: its assets, checks, resources and family sensor.

Every study is its own namespace in one instance: asset keys carry the study's name as prefix
(`tiny/native_samples`), families are the study's own dynamic partitions (`tiny_model_family`) and
outputs go to QUP_STORE/studies/<name>/. workspace.yaml loads one code location per study file
in data/studies (`qup_assets.definitions:<name>`); `defs` is the study QUP_STUDY names (default tiny).
"""


from pathlib import Path

import dagster as dg

from qup_assets.assets import problems, quality, report, students, training, variants
from qup_assets.assets.partitions import family_partitions
from qup_assets.assets.resources import ACCELERATOR_TAG, GPU_STEPS_PER_RUN, StudyResource
from qup_assets.assets.sensors import build_family_sensor
from qup_assets.backends.base import stable_hash
from qup_assets.mathcore.extract import CHECKER_VERSION
from qup_assets.storage.io_manager import StoreIOManager
from qup_assets.storage.namespace import check_claim
from qup_assets.storage.tables import study_store
from qup_assets.study import STUDIES_DIR, Study, load_study, resolve_study_path, store_root

MODULES = [problems, students, variants, quality, training, report]

# The study sections each asset reads directly; a change there changes the asset's code version, so
# the UI shows it (and, through lineage, everything downstream) as stale. Assets that verify answers also
# carry the checker's version (mathcore/extract.py CHECKER_VERSION). Per-family settings are left
# out on purpose: a code version is per asset, and adding a family must not make the others look stale.
STUDY_INPUTS = {
    "problem_pool": ("problems", "verification"),
    "benchmarks": ("benchmarks", "verification"),
    "native_samples": ("sampling", "verification"),
    "native_traces": ("sampling", "verification"),
    "reward_model": ("reward_models",),
    "rm_diagnostics": ("reward_models", "evaluation"),
    **{f"{v}_traces": ("oracle", "verification") for v in variants.VARIANTS},
    **{f"{v}_rewards": ("reward_models",) for v in quality.ALL_VARIANTS},
    **{f"{v}_checkpoints": ("training",) for v in quality.ALL_VARIANTS},
    **{f"{v}_eval": ("evaluation", "verification", "training") for v in quality.ALL_VARIANTS},
    "base_eval": ("evaluation", "verification"),
    "paradox_report": ("training", "evaluation"),
}


def study_assets(study: Study, prefix: bool = True) -> list[dg.AssetsDefinition]:
    """The asset graph for one study: keys under its prefix, its family partitions, code versions that carry
    a hash of the study sections each asset reads (so the UI shows a study edit as staleness)."""
    families = family_partitions(study.name)
    dumped = study.model_dump(mode="json")

    def for_study(spec: dg.AssetSpec) -> dg.AssetSpec:
        changes = {"partitions_def": families} if spec.partitions_def is not None else {}
        sections = STUDY_INPUTS.get(spec.key.path[-1])
        if sections:
            parts = [dumped.get(k) for k in sections]
            if "verification" in sections:  # what it verifies depends on the checker's own version too
                parts.append(CHECKER_VERSION)
            digest = stable_hash(*parts)[:8]
            changes["code_version"] = f"{spec.code_version}-study.{digest}"
        return spec.replace_attributes(**changes) if changes else spec

    assets = dg.load_assets_from_modules(MODULES, key_prefix=study.name if prefix else None)
    return [a.map_asset_specs(for_study) for a in assets]


# The jobs a user picks in the UI: what each stage of `qup run` launches, with the same names.
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


def study_executor(study: Study) -> dg.ExecutorDefinition:
    """in_process: a run's steps share its run worker (cheap, right on CPU). multiprocess: a process per step
    (its engine and GPU memory gone when it ends), at most GPU_STEPS_PER_RUN accelerator steps at once per
    run, since they share the run's machine (on Kubernetes, its pod's GPUs)."""
    if study.executor == "in_process":
        return dg.in_process_executor
    return dg.multiprocess_executor.configured({"tag_concurrency_limits": [
        {"key": ACCELERATOR_TAG, "value": "gpu", "limit": GPU_STEPS_PER_RUN}]}, name="multiprocess")


def build_definitions(study: str | None = None, store: str | None = None) -> dg.Definitions:
    study_path = str(resolve_study_path(study))
    s = load_study(study_path)
    root = Path(store) if store else store_root()
    check_claim(root, s.name, study_path)  # a second file with this name fails here, before anything runs
    store_dir = str(study_store(root, s.name))
    assets = study_assets(s)
    return dg.Definitions(
        assets=assets,
        asset_checks=dg.load_asset_checks_from_modules([problems, students, variants], asset_key_prefix=s.name),
        jobs=study_jobs(s, assets),
        executor=study_executor(s),
        sensors=[build_family_sensor(study_path, s.name), dg.AutomationConditionSensorDefinition(
            f"{s.name}_report_refresh", target=dg.AssetSelection.assets(dg.AssetKey([s.name, "paradox_report"])),
            default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=30,
            description="Refreshes paradox_report once families change (runs while the daemon runs).")],
        resources={
            "study": StudyResource(study=study_path, store_dir=store_dir, store_root=str(root)),
            "io_manager": StoreIOManager(store_dir=store_dir),
        },
    )


def __getattr__(name: str) -> dg.Definitions:
    """`qup_assets.definitions:<study>` for each study file in data/studies: one code location per study;
    `from_env` for the study QUP_STUDY names at each load; `path_<hex>` for a study file elsewhere."""
    if name == "from_env":
        return build_definitions()
    if name.startswith("path_"):  # a study file outside data/studies, its path hex-encoded (orchestration/daemon.py)
        try:
            return build_definitions(bytes.fromhex(name[5:]).decode())
        except ValueError:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    if name.startswith("__") or not (STUDIES_DIR / f"{name}.yaml").is_file():
        raise AttributeError(f"module {__name__!r} has no attribute {name!r} (no study file "
                             f"{STUDIES_DIR / (name + '.yaml')})")
    return build_definitions(name)


defs = build_definitions()
