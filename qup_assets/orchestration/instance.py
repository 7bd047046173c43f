"""The instance's dagster.yaml, checked before any run is created: every class it names must import."""

import importlib.util
from pathlib import Path

import yaml


class InstanceError(ValueError):
    """dagster.yaml asks for something this environment cannot provide."""


def pip_name(module: str) -> str:
    """The pip requirement that provides a module: dagster_k8s -> dagster-k8s==0.29.N, matching dagster."""
    top = module.split(".")[0]
    if top.startswith("dagster_"):
        import dagster

        major, minor, patch = (dagster.__version__.split(".") + ["0", "0"])[:3]
        return f"{top.replace('_', '-')}=={int(major) - 1}.{int(minor) + 16}.{patch}"
    return top.replace("_", "-")


def check_instance(home: Path) -> None:
    """Every `module:` in DAGSTER_HOME/dagster.yaml (run launcher, coordinator, storage...) can be imported."""
    cfg = Path(home) / "dagster.yaml"
    if not cfg.is_file():
        return
    try:
        data = yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise InstanceError(f"{cfg}: not valid YAML: {e}") from None
    for section, block in data.items():
        module = block.get("module") if isinstance(block, dict) else None
        if not module:
            continue
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            raise InstanceError(f"{cfg}: {section} uses {block.get('class', '?')} from {module}, which is not "
                                f"installed here: pip install {pip_name(module)}")
