"""The README to the letter: every read-only `qup` command in its shell blocks runs, against the micro study."""

import re
import shlex
from pathlib import Path

import pytest

from qup_assets.cli import main

README = Path(__file__).resolve().parent.parent / "README.md"
WRITES = {("run",), ("families", "sync"), ("store", "migrate"), ("worker",),  # worker: runs until stopped
          ("world", "build")}


def readme_commands() -> list[str]:
    """Every `qup ...` command in a ```bash block, multi-line quoted arguments joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL):
        pending = ""
        for line in block.splitlines():
            pending = f"{pending}\n{line}" if pending else line
            try:
                words = shlex.split(pending, comments=True)
            except ValueError:  # an open quote: the command goes on on the next line
                continue
            pending = ""
            if words and words[0] == "qup":
                commands.append(words)
    return commands


def read_only(words: list[str]) -> bool:
    return "--help" in words or not any(tuple(words[1:1 + len(w)]) == w for w in WRITES)


def test_the_readme_has_read_only_commands_to_check():
    cmds = [c for c in readme_commands() if read_only(c)]
    assert {c[1] for c in cmds} >= {"sql", "plan", "report", "verify", "families", "run", "world"}  # run --help


@pytest.mark.slow
def test_every_read_only_readme_command_runs_as_printed(micro_study, tmp_path, monkeypatch, capsys):
    micro_study.copy(tmp_path / "micro").env(monkeypatch)  # QUP_STUDY, QUP_STORE, DAGSTER_HOME, on micro
    for words in [c for c in readme_commands() if read_only(c)]:
        try:
            code = main(words[1:])
        except SystemExit as e:  # --help
            code = e.code
        out = capsys.readouterr()
        assert code == 0, f"`{shlex.join(words)}` exited {code}:\n{out.err[-2000:]}"
        assert out.out.strip(), shlex.join(words)
        assert "(no rows)" not in out.out, shlex.join(words)  # the examples query tables that exist
