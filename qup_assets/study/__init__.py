"""The study file: one YAML document that says what to run, validated strictly (schema.py), its families
(families.py), its Oracle and reward models (judges.py), the shared names (base.py) and loading (load.py). Import from here."""

from qup_assets.study.base import DEFAULT_STUDY, REPO_ROOT, STUDIES_DIR, StudyError
from qup_assets.study.families import PLAIN_TEMPLATES, Backend, Engine, Family, HFStudent, Prompt, SyntheticStudent
from qup_assets.study.load import load_study, resolve_study_path, store_root
from qup_assets.study.schema import (
    Benchmark,
    Distributed,
    Evaluation,
    FieldMap,
    Grid,
    Hardware,
    HFSource,
    LocalSource,
    Lora,
    Oracle,
    RewardModel,
    Sampling,
    Source,
    Study,
    SyntheticSource,
    Training,
    Verification,
)

__all__ = [
    "DEFAULT_STUDY", "REPO_ROOT", "STUDIES_DIR", "StudyError", "PLAIN_TEMPLATES", "Backend", "Engine", "Family",
    "HFStudent", "Prompt", "SyntheticStudent", "load_study", "resolve_study_path", "store_root", "Benchmark",
    "Distributed", "Evaluation", "FieldMap", "Grid", "Hardware", "HFSource", "LocalSource", "Lora", "Oracle", "RewardModel",
    "Sampling", "Source", "Study", "SyntheticSource", "Training", "Verification",
]
