"""The study's judges of the traces: the Oracle that rewrites them and the reward models that score them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from qup_assets.study.base import _Strict
from qup_assets.study.families import Backend, Engine


class Oracle(_Strict):
    kind: Literal["symbolic", "llm"] = "symbolic"
    model: str | None = None
    backend: Backend | None = None
    max_retries: int = Field(2, ge=0, le=10)
    temperature: float = Field(0.7, ge=0)
    max_tokens: int = Field(2048, gt=0)
    # symbolic Oracle only: the share of traces its refine rewrites in the Oracle's own form (the others come
    # back with their repairs only), as an LLM asked to polish sometimes rewrites and sometimes hands back
    polish_share: float = Field(0.5, ge=0, le=1)
    # LLM Oracle only: also ask it to judge each rewrite's semantic preservation (oracle/judge.py), as the
    # paper used a GPT judge; column `semantic_judge` of the variant tables
    semantic_judge: bool = False
    # Fail fast: after the first `fail_fast_after` rewrites of a variant, stop when fewer than
    # `min_verified_share` of them verified (a wrong prompt, chat template, model or max_tokens), before the
    # Oracle spends its hours on the rest. What was rewritten stays cached, so a fixed configuration resumes.
    fail_fast_after: int = Field(64, ge=1)
    # the context of the Oracle's model (an openai server's --max-model-len; a vllm backend's engine says its
    # own): its prompt holds the problem and the student's whole trace, and its answer follows
    max_model_len: int | None = Field(None, gt=0)
    min_verified_share: float = Field(0.2, ge=0, le=1)

    @model_validator(mode="after")
    def _llm_needs_model(self):
        if self.kind == "llm" and not (self.model and self.backend):
            raise ValueError("an 'llm' oracle needs model and backend")
        if self.semantic_judge and self.kind != "llm":
            raise ValueError("semantic_judge needs an 'llm' oracle (the symbolic one has no judgement to give)")
        return self


class RewardModel(_Strict):
    name: str
    kind: Literal["synthetic", "symbolic_process", "sequence_classifier", "qwen_outcome", "process", "nemotron"]
    model: str | None = None
    trust_remote_code: bool = False
    aggregation: Literal["min", "mean", "last"] = "min"
    batch_size: int = Field(8, gt=0)
    # padded tokens per forward pass (batches are formed longest first within it and batch_size)
    max_batch_tokens: int = Field(16384, gt=0)
    # the system turn before the problem; qwen_outcome and process default to their model cards' own
    system: str | None = None
    # transformers (any kind), or vLLM's pooling runner (sequence_classifier, qwen_outcome) with engine settings
    backend: Literal["transformers", "vllm"] = "transformers"
    engine: Engine = Engine()
    # synthetic RMs only: how many generated problems become preference pairs, Bradley-Terry steps, the
    # backbone's language-model pretraining steps, and the share of pairs that prefer the Oracle's style
    train_problems: int = Field(1000, gt=0)
    train_steps: int = Field(300, gt=0)
    pretrain_steps: int = Field(600, gt=0)
    style_pair_share: float = Field(0.2, ge=0, le=1)
    hidden_size: int = Field(128, ge=16, le=1024)
    num_layers: int = Field(4, ge=1, le=24)
    # symbolic_process RMs only (the synthetic world's process RM, reward/process.py): the published verifier
    # whose step error rates it is calibrated to, and a multiple of those rates (0: exact; 2: twice as noisy)
    verifier: Literal["qwen2.5-math-prm-7b", "qwen2.5-math-prm-72b"] = "qwen2.5-math-prm-7b"
    error_scale: float = Field(1.0, ge=0, le=5)
    # false: a sensitivity variant (e.g. the process RM at another error_scale): scored, diagnosed and given its
    # own verdict, but left out of the combined reward that the headline verdict and the plots use
    headline: bool = True

    @model_validator(mode="after")
    def _needs_model(self):
        if self.kind == "symbolic_process":
            if self.model or self.backend != "transformers":
                raise ValueError("a 'symbolic_process' reward model is the synthetic world's own checker: it takes "
                                 "no model and no backend")
            return self
        if {"verifier", "error_scale"} & self.model_fields_set:
            raise ValueError("verifier and error_scale are settings of a 'symbolic_process' reward model")
        if self.kind != "synthetic" and not self.model:
            raise ValueError(f"a '{self.kind}' reward model needs model (a local folder or HF id)")
        if self.backend == "vllm" and self.kind in ("process", "nemotron"):
            raise ValueError(f"a '{self.kind}' reward model has no vLLM path here: use backend transformers")
        if self.backend != "vllm" and "engine" in self.model_fields_set:
            raise ValueError("engine settings are for backend vllm")
        return self
