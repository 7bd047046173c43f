"""The Oracle interface shared by the symbolic and the LLM oracle."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

# The tasks an Oracle implements (symbolic.py, llm.py with prompts/<task>.v<N>.txt); a registry variant names one.
TASKS = ("refine", "synthesize", "style_align")


@dataclass(frozen=True)
class OracleItem:
    """One problem to rewrite: the problem, its gold answer, the native trace and (synthetic world) its program."""

    problem_id: str
    problem: str
    answer: str
    native: str | None = None
    program: str | None = None


@dataclass(frozen=True)
class OracleResult:
    completion: str | None
    ok: bool
    reason: str
    attempts: int = 1
    repaired_steps: int = 0


class Oracle(Protocol):
    name: str  # which oracle and prompt version, recorded on every trace

    def run(self, kind: str, items: Sequence[OracleItem]) -> list[OracleResult]: ...
