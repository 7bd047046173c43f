"""The study file: one YAML document that says what to run, validated strictly.

A typo in a study file must fail loudly at load time (with the file, the field
path and what was expected), never silently fall back to a default: every model
is `extra="forbid"`, YAML duplicate keys are rejected, and family names must be
valid Dagster partition keys (they also become file names in the store)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import Field, field_validator, model_validator

from qup_assets.mathcore.extract import AnswerFormats
from qup_assets.study.base import BENCHMARK_NAME, FAMILY_NAME, STUDY_NAME, _Strict
from qup_assets.study.families import Family
from qup_assets.study.judges import Oracle, RewardModel
from qup_assets.study.gpus import every_need, student_gpus

# ---------------------------------------------------------------- problem sources


class FieldMap(_Strict):
    """Which columns of an external dataset hold the problem, solution and answer.

    When `answer` is None the gold answer is taken from the last \\boxed{} of the
    solution (NuminaMath-CoT rows carry no separate answer column).
    """

    problem: str = "problem"
    solution: str | None = "solution"
    answer: str | None = None
    id: str | None = None


class SyntheticSource(_Strict):
    """Procedurally generated multi-step arithmetic word problems (the synthetic world)."""

    kind: Literal["synthetic"]
    size: int = Field(gt=0)
    seed: int = 0
    min_steps: int = Field(2, ge=1, le=8)
    max_steps: int = Field(4, ge=1, le=8)
    max_operand: int = Field(20, ge=2, le=10_000)

    @model_validator(mode="after")
    def _steps_ordered(self):
        if self.min_steps > self.max_steps:
            raise ValueError(f"min_steps ({self.min_steps}) must be <= max_steps ({self.max_steps})")
        return self


class HFSource(_Strict):
    """A Hugging Face dataset: a hub name (from the local HF cache when offline) or a local folder."""

    kind: Literal["hf"]
    name: str
    config: str | None = None
    split: str = "train"
    fields: FieldMap = FieldMap()
    size: int | None = Field(None, gt=0)
    seed: int = 0


class LocalSource(_Strict):
    """A local .jsonl or .parquet file; relative paths are resolved against the study file."""

    kind: Literal["local"]
    path: str
    fields: FieldMap = FieldMap()
    size: int | None = Field(None, gt=0)
    seed: int = 0

    @field_validator("path")
    @classmethod
    def _known_format(cls, v: str) -> str:
        if not v.endswith((".jsonl", ".json", ".parquet")):
            raise ValueError("path must end in .jsonl, .json or .parquet")
        return v


Source = Annotated[Union[SyntheticSource, HFSource, LocalSource], Field(discriminator="kind")]


class Benchmark(_Strict):
    name: str
    source: Source

    @field_validator("name")
    @classmethod
    def _valid_name(cls, v: str) -> str:
        if not BENCHMARK_NAME.match(v):
            raise ValueError("benchmark names use lowercase letters, digits, '.', '_' or '-' (max 64)")
        return v


# ---------------------------------------------------------------- the rest of the protocol


class Sampling(_Strict):
    """Native rejection sampling (paper: N=8 at T=1.0, one correct trace kept per problem)."""

    n: int = Field(8, gt=0)
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(2048, gt=0)
    seed: int = 0


class Grid(_Strict):
    lr: list[float] = Field(min_length=1)
    batch_size: list[int] = Field(min_length=1)


class Lora(_Strict):
    r: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)


class Distributed(_Strict):
    """How `accelerate launch` spreads one fine-tuning job (training.launcher: accelerate). ddp: a full copy
    per device (up to ~1.5B on 80 GB); fsdp: parameters, gradients and optimizer state fully sharded, bf16,
    activation checkpointing (a 7B full fine-tune on 8 x 80 GB); deepspeed_zero3: sharded the same way
    through DeepSpeed (needs `pip install deepspeed`). Several machines: the same study on each, machine_rank
    0..N-1."""

    strategy: Literal["ddp", "fsdp", "deepspeed_zero3"] = "ddp"
    num_machines: int = Field(1, ge=1)
    machine_rank: int = Field(0, ge=0)
    main_process_ip: str | None = None
    main_process_port: int = Field(29500, gt=0, lt=65536)
    activation_checkpointing: bool = True  # fsdp (its accelerate config); ddp and deepspeed_zero3 ignore it

    @model_validator(mode="after")
    def _machines(self):
        if self.machine_rank >= self.num_machines:
            raise ValueError(f"machine_rank {self.machine_rank} must be below num_machines {self.num_machines}")
        if self.num_machines > 1 and not self.main_process_ip:
            raise ValueError("several machines need main_process_ip (the address of machine_rank 0)")
        return self


class Training(_Strict):
    """Fine-tuning on each variant (paper: lr 5e-5, batch 256, 1 epoch; SFT and DFT)."""

    objectives: list[Literal["sft", "dft"]] = Field(["sft", "dft"], min_length=1)
    lr: float = Field(5e-5, gt=0)
    batch_size: int = Field(256, gt=0)
    # per device per forward; the rest of batch_size is gradient accumulation
    micro_batch_size: int = Field(16, gt=0)
    epochs: float = Field(1.0, gt=0)
    max_length: int = Field(4096, gt=0)
    on_overlength: Literal["drop", "fail"] = "drop"
    grid: Grid | None = None
    lora: Lora | None = None
    seed: int = 0
    # a step checkpoint every N optimizer steps in the checkpoint's temp folder, so a killed run resumes
    # there instead of from step 0 (0: none; worth it when one training run takes hours)
    save_steps: int = Field(0, ge=0)
    launcher: Literal["in_process", "accelerate"] = "in_process"
    num_processes: int = Field(1, gt=0)  # in all, over every machine
    distributed: Distributed = Distributed()

    @model_validator(mode="after")
    def _sharded_without_lora(self):
        if self.lora and self.distributed.strategy != "ddp":
            raise ValueError("lora is merged on one process after training: use distributed.strategy ddp with it")
        if self.num_processes % self.distributed.num_machines:
            raise ValueError(f"num_processes {self.num_processes} must split evenly over "
                             f"{self.distributed.num_machines} machines")
        return self


class Evaluation(_Strict):
    """Avg@k evaluation (paper: Avg@16 at T=1.0, 4096 tokens)."""

    k: int = Field(16, gt=0)
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(4096, gt=0)
    seed: int = 0
    bootstrap_samples: int = Field(1000, gt=0)
    # correct and (as many) wrong native samples each reward model is checked on (rm_diagnostics)
    diagnostic_samples: int = Field(200, gt=0)


class Verification(_Strict):
    """Limits of the hardened verifier; model text beyond them is rejected, not parsed."""

    timeout_seconds: float = Field(5.0, gt=0)
    workers: int = Field(2, gt=0, le=64)
    max_answer_chars: int = Field(512, gt=0)
    # Which answer formats count (mathcore/extract.py): boxed only; boxed, markers and math spans
    # (standard); or those plus the text's last number, as Qwen2.5-Math's evaluation does (qwen_math).
    answer_formats: AnswerFormats = "standard"


class Hardware(_Strict):
    """The GPUs a study is sized for (qup_assets/memory.py checks training and engines against them)."""

    gpu_memory_gb: float = Field(80.0, gt=0)
    gpus_per_node: int = Field(8, gt=0)
    # GPUs the Oracle's server (`vllm serve`, started by the researcher) holds on this machine: the study's own
    # engines are assigned the others (qup_assets/devices.py). Empty when the Oracle runs elsewhere.
    oracle_gpus: list[int] = []

    @model_validator(mode="after")
    def _oracle_gpus_exist(self):
        bad = [i for i in self.oracle_gpus if not 0 <= i < self.gpus_per_node]
        if bad or len(set(self.oracle_gpus)) != len(self.oracle_gpus):
            raise ValueError(f"oracle_gpus {self.oracle_gpus} must be distinct GPU ids below gpus_per_node "
                             f"{self.gpus_per_node}")
        if len(self.oracle_gpus) >= self.gpus_per_node:
            raise ValueError(f"oracle_gpus {self.oracle_gpus} leave none of the {self.gpus_per_node} GPUs to the study")
        return self


class Study(_Strict):
    name: str
    description: str = ""
    problems: Source
    benchmarks: list[Benchmark] = Field(min_length=1)
    families: dict[str, Family] = Field(min_length=1)
    oracle: Oracle = Oracle()
    reward_models: list[RewardModel] = Field([RewardModel(name="synthetic-rm", kind="synthetic")], min_length=1)
    sampling: Sampling = Sampling()
    training: Training = Training()
    evaluation: Evaluation = Evaluation()
    verification: Verification = Verification()
    # Below this share of native traces in the common set, common_problems' blocking check stops the run.
    min_common_fraction: float = Field(0.5, ge=0, le=1)
    # in_process: a run's steps share its run worker process (cheap, right for CPU); multiprocess: every
    # step in a process of its own, so a step's engine and GPU memory are gone when it ends (GPUs).
    executor: Literal["in_process", "multiprocess"] = "in_process"
    # The GPUs it runs on; none for a CPU study. `qup plan` and `qup run` check its memory against them.
    hardware: Hardware | None = None
    # Tokens a rendered prompt (template + problem) may take: checked when prompts are rendered, and here
    # against every engine's context, so that max_tokens always fits beside the longest prompt.
    max_prompt_tokens: int = Field(1024, gt=0)

    @model_validator(mode="after")
    def _process_rm_on_world_problems(self):
        """The symbolic process RM reads a problem back into the world's program: it can judge world problems only."""
        for rm in self.reward_models:
            if rm.kind == "symbolic_process" and self.problems.kind != "synthetic":
                raise ValueError(f"reward model {rm.name!r}: a 'symbolic_process' RM checks the synthetic world's "
                                 f"problems; this study's pool is {self.problems.kind!r}")
        if not any(rm.headline for rm in self.reward_models):
            raise ValueError("every reward model has headline: false; at least one must carry the headline verdict")
        return self

    @model_validator(mode="after")
    def _fits_context(self):
        """Each engine's context holds its longest prompt and its answer: an engine that cannot fit them
        refuses every request (a server answers 400) or stops mid-answer, hours into a run."""
        prompt = self.max_prompt_tokens
        need = {"sampling.max_tokens": self.sampling.max_tokens, "evaluation.max_tokens": self.evaluation.max_tokens}
        for name, fam in self.families.items():
            ctx = fam.backend.engine.max_model_len if fam.backend.kind == "vllm" else None
            for setting, n in need.items():
                if ctx and prompt + n > ctx:
                    raise ValueError(
                        f"{setting} {n} + max_prompt_tokens {prompt} = {prompt + n} tokens do not fit "
                        f"families.{name}.backend.engine.max_model_len {ctx}: lower {setting} to {ctx - prompt} "
                        "(or max_prompt_tokens), or raise max_model_len if the model allows it")
        o = self.oracle
        ctx = o.max_model_len or (o.backend.engine.max_model_len if o.backend and o.backend.kind == "vllm" else None)
        total = prompt + self.sampling.max_tokens + o.max_tokens
        if o.kind == "llm" and ctx and total > ctx:
            raise ValueError(
                f"the Oracle's prompt (max_prompt_tokens {prompt} + a trace of up to sampling.max_tokens "
                f"{self.sampling.max_tokens}) and its answer (oracle.max_tokens {o.max_tokens}) = {total} tokens do "
                f"not fit its context of {ctx} (oracle.max_model_len): lower oracle.max_tokens to "
                f"{max(0, ctx - prompt - self.sampling.max_tokens)} or sampling.max_tokens, or serve a longer context")
        return self

    @model_validator(mode="after")
    def _gpus_fit(self):
        """A GPU study assigns each step's engine its GPUs (qup_assets/devices.py): every engine must fit the
        GPUs left beside the Oracle's, and each step must be a process of its own to be given them."""
        if self.hardware is None:
            return self
        if self.executor != "multiprocess":
            raise ValueError("a study with hardware: (GPUs) needs executor: multiprocess: each step is given its "
                             "GPUs through CUDA_VISIBLE_DEVICES, which a process reads once, when CUDA starts")
        free = student_gpus(self)
        for setting, n in every_need(self):
            if n > len(free):
                raise ValueError(
                    f"{setting} asks for {n} GPUs, but hardware leaves {len(free)} to the study's engines "
                    f"(gpus_per_node {self.hardware.gpus_per_node} less oracle_gpus {self.hardware.oracle_gpus}): "
                    f"lower {setting} to {len(free)} or move the Oracle off this machine")
        return self

    @field_validator("name")
    @classmethod
    def _study_name(cls, v: str) -> str:
        if not STUDY_NAME.match(v):
            raise ValueError(
                f"study name {v!r} cannot be a namespace: use lowercase letters, digits and '_', starting with a "
                "letter (max 40); it becomes the Dagster asset key prefix and the study's folder in the store"
            )
        return v

    @field_validator("families")
    @classmethod
    def _family_keys(cls, v: dict[str, Family]) -> dict[str, Family]:
        for name in v:
            if not FAMILY_NAME.match(name):
                raise ValueError(
                    f"family name {name!r} is not a valid partition key: use lowercase letters, "
                    "digits, '.', '_' or '-', starting with a letter or digit (max 64)"
                )
        return v

    @field_validator("benchmarks")
    @classmethod
    def _unique_benchmarks(cls, v: list[Benchmark]) -> list[Benchmark]:
        names = [b.name for b in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate benchmark names: {dupes}")
        return v

    @field_validator("reward_models")
    @classmethod
    def _unique_rms(cls, v: list[RewardModel]) -> list[RewardModel]:
        names = [r.name for r in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate reward model names: {dupes}")
        return v

    # Where this study was loaded from, so relative data paths resolve next to it.
    source_path: str | None = Field(None, exclude=True)

    def resolve_path(self, path: str) -> Path:
        p = Path(path).expanduser()
        if p.is_absolute():
            return p
        base = Path(self.source_path).parent if self.source_path else Path.cwd()
        return (base / p).resolve()
