"""The one protocol every language-model backend speaks, and the values it returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Protocol, Sequence

from qup_assets.common import stable_hash

ProgressFn = Callable[[str], None]


class BackendError(RuntimeError):
    """A backend that cannot serve (model missing, server down, 4xx): the message says how to fix it."""


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int = 0

    def key(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Completion:
    text: str
    n_tokens: int
    finish_reason: str  # "stop" (eos or a stop string) | "length" | "prompt_too_long" (refused by the server)


@dataclass(frozen=True)
class Request:
    """One sample to draw: prompt, its index among the n samples of that prompt."""

    prompt: str
    sample_idx: int = 0


@dataclass
class TokenLogprobs:
    tokens: list[str] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)

    @property
    def nll(self) -> float:
        return -sum(self.logprobs)


class LanguageModel(Protocol):
    """Backends draw samples and score given completions; `fingerprint` names the exact model."""

    fingerprint: str

    def sample(self, requests: Sequence[Request], params: SamplingParams) -> list[Completion]: ...

    def logprobs(self, prompts: Sequence[str], completions: Sequence[str]) -> list[TokenLogprobs]: ...


def row_seed(seed: int, prompt: str, sample_idx: int) -> int:
    """A per-sample seed: the same sample is drawn whatever else shares its batch."""
    return int(stable_hash("row-seed", seed, prompt, sample_idx)[:15], 16)


def apply_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
