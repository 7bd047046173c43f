"""Helpers shared by several test files (fixtures live in conftest.py)."""

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
