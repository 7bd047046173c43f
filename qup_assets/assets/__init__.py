"""The Dagster layer: each asset declares its inputs, calls one domain function and publishes metadata.

`study_graph()` assembles the whole graph from the variant registry (qup_assets/variants.py) at call time: per
variant its traces (for all but native), adaptation, rewards, checkpoints and evaluation, plus the assets every
family has once (problems, students, reward models, common problems, the base model's evaluation, the report).
"""

import dagster as dg

from qup_assets.assets import adaptation, evaluation, health, problems, report, rewards, students, traces, training
from qup_assets.variants import all_variants, rewrites


def study_graph() -> tuple[list[dg.AssetsDefinition], list[dg.AssetChecksDefinition]]:
    """(assets, asset checks), unprefixed."""
    common, common_check = traces.build_common_problems()
    assets = [
        *dg.load_assets_from_modules([problems, students, rewards, evaluation]),
        common,
        *[traces.build_traces_asset(v) for v in rewrites()],
        *[adaptation.build_adaptation_asset(v) for v in all_variants()],
        *[rewards.build_rewards_asset(v) for v in all_variants()],
        *[training.build_checkpoints_asset(v) for v in all_variants()],
        *[evaluation.build_eval_asset(v) for v in all_variants()],
        report.build_exemplars_asset(),
        report.build_report_asset(),
    ]
    checks = [*dg.load_asset_checks_from_modules([problems, students]), common_check, *health.build_health_checks()]
    return assets, checks
