"""The Dagster code location of one study: its assets, checks, resources and family sensor.

Every study is its own namespace in one instance: asset keys carry the study's name as prefix
(`tiny/native_samples`), families are the study's own dynamic partitions (`tiny_model_family`) and
outputs go to QUP_STORE/studies/<name>/. workspace.yaml loads one code location per study file
in data/studies (`qup_assets.definitions:<name>`); `defs` is the study QUP_STUDY names (default tiny).
"""


import types
from pathlib import Path

import dagster as dg

from qup_assets import variants
from qup_assets.assets import study_graph
from qup_assets.assets.io_manager import StoreIOManager
from qup_assets.assets.jobs import study_jobs
from qup_assets.assets.partitions import family_partitions
from qup_assets.assets.resources import ACCELERATOR_POOL, ACCELERATOR_TAG, GPU_STEPS_PER_RUN, StudyResource
from qup_assets.assets.sensors import build_family_sensor
from qup_assets.common import stable_hash
from qup_assets.mathcore.extract import CHECKER_VERSION
from qup_assets.storage.namespace import check_claim
from qup_assets.storage.tables import study_store
from qup_assets.study import STUDIES_DIR, Study, load_study, resolve_study_path, store_root


# The study sections each asset reads directly; a change there changes the asset's code version, so
# the UI shows it (and, through lineage, everything downstream) as stale. Assets that verify answers also
# carry the checker's version (mathcore/extract.py CHECKER_VERSION). Per-family settings are left
# out on purpose: a code version is per asset, and adding a family must not make the others look stale.
def study_inputs() -> dict[str, tuple[str, ...]]:
    """Asset name -> the study sections it reads (per variant from the registry)."""
    names = variants.names()
    return {
        "problem_pool": ("problems", "verification"),
        "benchmarks": ("benchmarks", "verification"),
        "native_samples": ("sampling", "verification"),
        "native_traces": ("sampling", "verification"),
        "reward_model": ("reward_models",),
        "rm_diagnostics": ("reward_models", "evaluation"),
        **{f"{v.name}_traces": ("oracle", "verification") for v in variants.rewrites()},
        **{f"{v}_rewards": ("reward_models",) for v in names},
        **{f"{v}_checkpoints": ("training",) for v in names},
        **{f"{v}_{kind}": ("evaluation", "verification", "training") for v in names for kind in ("eval", "per_problem")},
        "base_eval": ("evaluation", "verification"),
        "base_per_problem": ("evaluation", "verification"),
        "paradox_report": ("training", "evaluation"),
    }


def study_assets(study: Study, prefix: bool = True) -> tuple[list[dg.AssetsDefinition], list]:
    """The asset graph for one study: keys under its prefix, its family partitions, code versions that carry
    a hash of the study sections each asset reads (so the UI shows a study edit as staleness)."""
    families = family_partitions(study.name)
    dumped = study.model_dump(mode="json")
    inputs = study_inputs()

    def for_study(spec: dg.AssetSpec) -> dg.AssetSpec:
        changes = {"partitions_def": families} if spec.partitions_def is not None else {}
        sections = inputs.get(spec.key.path[-1])
        if sections:
            parts = [dumped.get(k) for k in sections]
            if "verification" in sections:  # what it verifies depends on the checker's own version too
                parts.append(CHECKER_VERSION)
            digest = stable_hash(*parts)[:8]
            changes["code_version"] = f"{spec.code_version}-study.{digest}"
        return spec.replace_attributes(**changes) if changes else spec

    # Dagster's own loader puts every key, dependency and check under the study's prefix; it reads modules,
    # so the graph built from the registry is handed to it as one.
    graph = types.ModuleType(f"qup_assets.study_graph.{study.name}")
    assets, checks = study_graph()
    for i, d in enumerate([*assets, *checks]):
        setattr(graph, f"def_{i}", d)
    key_prefix = study.name if prefix else None
    assets = dg.load_assets_from_modules([graph], key_prefix=key_prefix)
    checks = dg.load_asset_checks_from_modules([graph], asset_key_prefix=key_prefix)
    return [a.map_asset_specs(for_study) for a in assets], checks


def study_executor(study: Study) -> dg.ExecutorDefinition:
    """in_process: a run's steps share its run worker (cheap, right on CPU). multiprocess: a process per step
    (its engine and GPU memory gone when it ends), at most GPU_STEPS_PER_RUN accelerator steps at once per
    run, since they share the run's machine (on Kubernetes, its pod's GPUs)."""
    if study.executor == "in_process":
        return dg.in_process_executor
    return dg.multiprocess_executor.configured({"tag_concurrency_limits": [
        {"key": ACCELERATOR_TAG, "value": ACCELERATOR_POOL, "limit": GPU_STEPS_PER_RUN}]}, name="multiprocess")


def build_definitions(study: str | None = None, store: str | None = None) -> dg.Definitions:
    study_path = str(resolve_study_path(study))
    s = load_study(study_path)
    root = Path(store) if store else store_root()
    check_claim(root, s.name, study_path)  # a second file with this name fails here, before anything runs
    store_dir = str(study_store(root, s.name))
    assets, checks = study_assets(s)
    return dg.Definitions(
        assets=assets,
        asset_checks=checks,
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
