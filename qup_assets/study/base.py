"""What every part of the study file shares: strict models, the names that become keys and paths, the error."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]
STUDIES_DIR = REPO_ROOT / "data" / "studies"
DEFAULT_STUDY = "tiny"

FAMILY_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# A study's name is its namespace: the asset key prefix, the partitions' name and its folder in the store.
STUDY_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
BENCHMARK_NAME = FAMILY_NAME


class StudyError(ValueError):
    """A study file that cannot be used; the message names file, field and expectation."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
