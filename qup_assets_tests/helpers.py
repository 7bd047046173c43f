"""Helpers shared by several test files (fixtures live in conftest.py)."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"


def key(name: str, study: str = "micro"):
    """An asset's key in the instance: the study's name is its prefix."""
    import dagster as dg

    return dg.AssetKey([study, name])


def study_data(study: str = "micro") -> Path:
    """The study's own folder under $QUP_STORE."""
    import os

    return Path(os.environ["QUP_STORE"]) / "studies" / study


def write_study(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def synthetic_traces(n=48, seed=3):
    """(ids, problems, completions in the qwen student's style, world problems) from the synthetic world."""
    from qup_assets.world.generator import generate
    from qup_assets.world.styles import STYLES

    probs = generate(n, seed, min_steps=1, max_steps=2, max_operand=9)
    ids = [f"p{i}" for i in range(n)]
    return ids, [p.problem for p in probs], [STYLES["qwen"].render(p.program, p.items) for p in probs], probs


def payloads(sentinel: Path) -> list[str]:
    s = str(sentinel)
    return [
        f"\\boxed{{__import__('os').system('touch {s}')}}",
        f"The answer is $\\boxed{{eval(\"open('{s}','w')\")}}$",
        f"Answer: exec(\"open('{s}','w').write('x')\")",
        f"\\boxed{{Symbol('x').__class__.__mro__[1].__subclasses__()}} and open('{s}','w')",
        f"#### lambda: open('{s}', 'w')",
        "\\boxed{" + "{" * 400 + "1" + "}" * 400 + "}",  # nesting bomb
        "\\boxed{9^{9^{9^{9^{9}}}}}",  # power tower
        "\\boxed{100000!}",
        "\\boxed{\ud800\udfff broken surrogates \x00\x1b[31m}",  # invalid unicode and control codes
        "x" * 2_000_000 + "\\boxed{4}",  # an enormous output
        "",
        "{{ config.__class__.__init__.__globals__['os'].system('touch " + s + "') }}",  # template injection
    ]


def printed_command_works(message: str) -> str:
    """The first `hf ...` command an error message prints, checked against the installed CLI: its subcommand
    and options must exist (run with --help, which parses them and downloads nothing)."""
    import re
    import shutil
    import subprocess
    import sys

    cmd = re.search(r"`(hf [^`]+)`", message).group(1)
    hf = shutil.which("hf") or str(Path(sys.executable).parent / "hf")
    out = subprocess.run([hf, *cmd.split()[1:], "--help"], capture_output=True, text=True)
    assert out.returncode == 0, f"{cmd!r} does not work as printed: {out.stderr[-500:]}"
    return cmd


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(url: str, proc, log: Path, seconds: float, what: str) -> None:
    """Poll `url` until it answers; fail with the server's log if `proc` exits or `seconds` pass first."""
    import http.client
    import time
    import urllib.request

    import pytest

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited early:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except (OSError, http.client.HTTPException):  # not listening yet, or closing on us while starting
            time.sleep(1)
    pytest.fail(f"{what} did not answer within {seconds:g} s:\n{log.read_text(errors='replace')[-3000:]}")


# ---- comparing studies: what a researcher reads of a study, and a store + Dagster home to run one in

# Columns that differ between two identical runs by nature: absolute paths and timings.
VOLATILE = {"path", "wall_time_s"}


SECOND_FAMILY = ("  micro-llama:\n    student: {kind: synthetic, architecture: llama, style: llama, hidden_size: 64, "
                 "num_layers: 2, pretrain_problems: 1000, pretrain_steps: 120}\n")


def small_study_text(second_family: bool = False) -> str:
    """micro, smaller and renamed micro_small (its family keeps micro's name): a second study that runs quickly.
    `second_family`: with a second, Llama family (the distributed test's). Both students and the RM are shipped
    in data/world/micro_small (`qup world build` over this text with the second family)."""
    from qup_assets.study import resolve_study_path

    text = resolve_study_path("micro").read_text()
    for old, new in [("name: micro", "name: micro_small"), ("size: 60, seed: 7", "size: 30, seed: 8"),
                     ("size: 20, seed: 70", "size: 10, seed: 80"),
                     ("hidden_size: 128, num_layers: 2, pretrain_problems: 1500, pretrain_steps: 300",
                      "hidden_size: 96, num_layers: 2, pretrain_problems: 1000, pretrain_steps: 240"),
                     ("train_problems: 400, train_steps: 60, pretrain_steps: 60", "train_problems: 150, train_steps: 20, pretrain_steps: 20"),
                     ("objectives: [sft, dft]", "objectives: [sft]")]:
        assert old in text, old
        text = text.replace(old, new)
    return with_second_family(text) if second_family else text


def with_second_family(text: str) -> str:
    """A study's text with the Llama family (SECOND_FAMILY) added before its own: the family that the tests add
    to micro and run beside micro_small's. Its students are shipped in data/world/micro and micro_small."""
    assert "families:\n" in text
    return text.replace("families:\n", "families:\n" + SECOND_FAMILY, 1)


def _stable(value):
    """A JSON value without its absolute paths and timings (at any depth)."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE | {"files", "store_path"}}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def results_of(store_root: Path, study: str) -> dict:
    """The tables of a study that has not run to its report yet."""
    import pandas as pd

    base = store_root / "studies" / study
    out = {}
    for f in sorted((base / "tables").rglob("*.parquet")):
        df = pd.read_parquet(f)
        out[str(f.relative_to(base))] = df.drop(columns=[c for c in df.columns if c in VOLATILE])
    for f in sorted((base / "tables").rglob("*.json")):
        out[str(f.relative_to(base))] = _stable(json.loads(f.read_text()))
    return out


def results(store_root: Path, study: str) -> dict:
    """What a researcher reads of one study: every table (volatile columns aside), the report's CSVs and verdict."""
    base = store_root / "studies" / study
    out = results_of(store_root, study)
    import pandas as pd

    # The CSVs as frames: compared like the tables, to float tolerance (two runs on different torch thread
    # counts sum in different orders); the verdict and headline stay exact text.
    for name in ("table1.csv", "table2.csv", "correlations.csv", "differences.csv"):
        out[f"report/{name}"] = pd.read_csv(base / "report" / name)
    for name in ("verdict.json", "headline.txt"):
        out[f"report/{name}"] = (base / "report" / name).read_text()
    return out


def assert_same(a: dict, b: dict):
    import pandas as pd

    assert sorted(a) == sorted(b)
    for k in a:
        if isinstance(a[k], pd.DataFrame):
            pd.testing.assert_frame_equal(a[k], b[k], obj=k)
        else:
            assert a[k] == b[k], k


def files(store_root: Path, study: str) -> dict:
    """Every byte of a study's folder."""
    base = store_root / "studies" / study
    return {str(p.relative_to(base)): p.read_bytes() for p in base.rglob("*") if p.is_file()}


def history(home: Path, study: str) -> dict:
    """(asset, partition) -> materialization count of one study's assets in the instance."""
    import dagster as dg

    saved = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        with dg.DagsterInstance.get() as instance:
            counts = {}
            for key in instance.get_asset_keys(prefix=[study]):
                for rec in instance.fetch_materializations(key, limit=10_000).records:
                    counts[(key.to_user_string(), rec.partition_key)] = counts.get((key.to_user_string(), rec.partition_key), 0) + 1
            return counts
    finally:
        if saved is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = saved


class Place:
    """A store and a Dagster home, empty or copied from another."""

    def __init__(self, root: Path, like: Path | None = None):
        if like is not None:
            shutil.copytree(like, root)
        self.root, self.store, self.home = root, root / "store", root / "dagster_home"
        self.home.mkdir(parents=True, exist_ok=True)
        cfg = Path(__file__).resolve().parent.parent / "dagster.yaml"
        (self.home / "dagster.yaml").write_text(cfg.read_text())

    def env(self) -> dict:
        return dict(os.environ, QUP_STORE=str(self.store), DAGSTER_HOME=str(self.home))

    def run(self, study: Path, monkeypatch) -> None:
        monkeypatch.setenv("QUP_STORE", str(self.store))
        monkeypatch.setenv("DAGSTER_HOME", str(self.home))
        from qup_assets.cli import main

        assert main(["run", "--study", str(study)]) == 0


def quiesce(home: Path, timeout: float = 60) -> None:
    """Stop the daemon `qup run` left idling on `home` (it lingers 20 s after its last run, opening and closing
    SQLite files, whose WAL files then vanish under a copy: `shutil.Error ... db-wal: No such file`), and wait
    until no process of that home is left, so copies of a finished study are copies of files at rest."""
    subprocess.run(["pkill", "-TERM", "-f", str(home)], check=False)
    deadline = time.monotonic() + timeout
    while subprocess.run(["pgrep", "-f", str(home)], capture_output=True).returncode == 0:
        if time.monotonic() > deadline:
            subprocess.run(["pkill", "-KILL", "-f", str(home)], check=False)
            break
        time.sleep(0.2)


def run_small_alone(root: Path) -> tuple[Path, Place]:
    """The smaller study run alone in its own store and instance under `root`: (study file, its place)."""
    study = root / "micro_small.yaml"
    study.write_text(small_study_text())
    place = Place(root / "place")
    out = subprocess.run([sys.executable, "-m", "qup_assets.cli", "run", "--study", str(study)], env=place.env(),
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    quiesce(place.home)
    return study, place
