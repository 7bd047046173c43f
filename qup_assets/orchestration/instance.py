"""The instance's dagster.yaml, checked before any run is created: every class it names must import, and
the services it names (Postgres storage, a Celery broker) must answer."""

import importlib.util
import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from qup_assets.study import REPO_ROOT


class InstanceError(ValueError):
    """dagster.yaml asks for something this environment cannot provide."""


def ensure_dagster_home() -> Path:
    """DAGSTER_HOME, default .dagster_home in the repo, holding a copy of the repo's dagster.yaml."""
    home = Path(os.environ.get("DAGSTER_HOME") or REPO_ROOT / ".dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists() and (REPO_ROOT / "dagster.yaml").exists():
        shutil.copy(REPO_ROOT / "dagster.yaml", cfg)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


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
    check_services(data, cfg)


def _value(v, what: str, cfg: Path) -> str | None:
    """A config value, `{env: NAME}` resolved."""
    if isinstance(v, dict) and "env" in v:
        if not os.environ.get(v["env"]):
            raise InstanceError(f"{cfg}: {what} comes from ${v['env']}, which is not set")
        return os.environ[v["env"]]
    return v


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or ''}".rstrip(":")  # never the password


def check_services(data: dict, cfg: Path) -> None:
    """Postgres storage accepts a connection and a Celery broker is up, so a missing service is one line
    that says what to start, not a run stuck in STARTING or a stack trace from the daemon."""
    pg = (data.get("storage") or {}).get("postgres") if isinstance(data.get("storage"), dict) else None
    if isinstance(pg, dict) and pg.get("postgres_url"):
        url = _value(pg["postgres_url"], "storage.postgres.postgres_url", cfg)
        if not url.startswith("postgresql+psycopg2://"):
            raise InstanceError(f"{cfg}: storage.postgres.postgres_url must start with postgresql+psycopg2:// "
                                "(dagster-postgres speaks psycopg2; SQLAlchemy 2.1 would open postgresql:// "
                                "with psycopg 3, which it does not support)")
        import psycopg2

        try:
            psycopg2.connect(url.replace("+psycopg2", "", 1), connect_timeout=3).close()
        except psycopg2.OperationalError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InstanceError(f"Postgres at {_where(url)} (the instance's storage, {cfg}) refuses the "
                                f"connection ({first}): start it, or fix storage.postgres in dagster.yaml") from None
    launcher = data.get("run_launcher") or {}
    broker = (launcher.get("config") or {}).get("broker") if isinstance(launcher, dict) else None
    if broker and "celery" in str(launcher.get("module", "")) + str(launcher.get("class", "")).lower():
        url = _value(broker, "run_launcher.config.broker", cfg)
        from kombu import Connection

        try:
            with Connection(url, connect_timeout=3) as conn:
                conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=3)
        except Exception as e:  # kombu raises the transport's own errors (redis, amqp, socket)
            raise InstanceError(f"the Celery broker at {_where(url)} (run_launcher in {cfg}) is down "
                                f"({type(e).__name__}): start it (redis-server), or fix run_launcher.config.broker"
                                ) from None
