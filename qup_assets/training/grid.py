"""The checkpoints a study trains per family and variant: one per objective and grid point, and where each lives
(the one place both the checkpoint assets and the evaluation read it from)."""

from __future__ import annotations

from pathlib import Path

from qup_assets.storage.tables import artifact_dir
from qup_assets.study import Training


def grid_points(training: Training) -> list[tuple[str, float, int]]:
    """(objective, lr, batch_size) for every checkpoint the study asks for; the grid replaces lr x batch."""
    lrs = training.grid.lr if training.grid else [training.lr]
    batches = training.grid.batch_size if training.grid else [training.batch_size]
    return [(o, lr, b) for o in training.objectives for lr in lrs for b in batches]


def point_name(objective: str, lr: float, batch_size: int, training: Training) -> str:
    return objective if not training.grid else f"{objective}-lr{lr:g}-bs{batch_size}"


def checkpoints_dir(store: Path, variant: str, family: str) -> Path:
    """The family's checkpoint folders for one variant, inside the study's store (so a moved store keeps them)."""
    return artifact_dir(store, f"{variant}_checkpoints", family)


def checkpoint_dir(store: Path, variant: str, family: str, objective: str, lr: float, batch_size: int,
                   training: Training) -> Path:
    """One grid point's HF model folder."""
    return checkpoints_dir(store, variant, family) / point_name(objective, lr, batch_size, training)
