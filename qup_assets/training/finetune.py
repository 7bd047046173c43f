"""Fine-tuning a student on one variant's traces with TRL: SFT (NLL) or DFT, one run per grid point.

The data is prompt-completion through the family's prompt: conversational messages when the family
uses its chat template (the template closes the assistant turn with the end-of-turn token, which is the
tokenizer's eos), or the rendered plain prompt with eos appended. The loss is on the completion only.
Traces longer than max_length are counted before training and dropped or refused, never cut: a cut
trace teaches the model to stop before its final answer.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from qup_assets.backends.base import Request, SamplingParams
from qup_assets.backends.prompting import messages, render_prompt
from qup_assets.backends.transformers_backend import TransformersBackend
from qup_assets.common import publish_dir, stable_hash
from qup_assets.study import Prompt


class OverlengthError(ValueError):
    """Traces exceed max_length and the study says `on_overlength: fail`."""


@dataclass(frozen=True)
class FinetuneJob:
    """Everything one training run needs; JSON-serializable so an `accelerate launch` process can read it."""

    base_model: str
    out_dir: str
    objective: str  # "sft" (NLL) | "dft"
    lr: float
    batch_size: int  # effective batch: micro batch x accumulation x processes
    micro_batch_size: int
    epochs: float
    max_length: int
    seed: int
    lora: dict | None = None
    trust_remote_code: bool = False
    data_hash: str = ""  # of the training records and the base model: a finished identical job is reused
    save_steps: int = 0  # a step checkpoint (model, optimizer, RNG, data position) every N steps; 0: none


def _identity(job: dict) -> dict:
    """What makes two jobs the same training (step checkpoints change where it can resume, not its result)."""
    return {k: v for k, v in job.items() if k != "save_steps"}


def records_hash(records: Sequence[dict], base_model_fingerprint: str) -> str:
    return stable_hash(base_model_fingerprint, json.dumps(list(records), sort_keys=True, ensure_ascii=False))


def finished_result(job: FinetuneJob) -> "FinetuneResult | None":
    """The result of an identical job whose checkpoint was already published (a re-run after a crash).

    The folder appears only by rename after training, with the job and its result inside, so an
    existing folder whose job matches this one exactly is complete.
    """
    meta = Path(job.out_dir) / "qup_training.json"
    if not job.data_hash or not meta.is_file():
        return None
    try:
        saved = json.loads(meta.read_text())
    except ValueError:
        return None
    if _identity(saved.get("job") or {}) != _identity(asdict(job)) or "result" not in saved:
        return None
    return FinetuneResult.from_dict(saved["result"])


@dataclass
class FinetuneResult:
    path: str
    objective: str
    lr: float
    batch_size: int
    examples: int
    steps: int
    tokens_trained: int  # completion tokens seen, all epochs
    train_loss: float
    wall_time_s: float
    loss_curve: list[tuple[int, float]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict) -> "FinetuneResult":
        """Back from JSON (result.json of a launched job, or a published checkpoint's record)."""
        return cls(**{**d, "loss_curve": [tuple(p) for p in d["loss_curve"]]})


@dataclass
class TrainingSet:
    records: list[dict]
    problem_ids: list[str]
    lengths: list[int]  # prompt + completion tokens of each kept record
    dropped: list[str]  # problem ids over max_length

    @property
    def drop_rate(self) -> float:
        return len(self.dropped) / max(1, len(self.dropped) + len(self.records))


def build_training_set(tokenizer, prompt: Prompt, problem_ids: Sequence[str], problems: Sequence[str],
                       completions: Sequence[str], max_length: int, on_overlength: str = "drop") -> TrainingSet:
    """Prompt-completion records in TRL's format, with their token lengths; overlength ones dropped or refused."""
    chat = prompt.format == "chat_template"
    kept, ids, lengths, dropped = [], [], [], []
    for pid, problem, completion in zip(problem_ids, problems, completions):
        if chat:
            msgs = messages(problem, prompt)
            rec = {"prompt": msgs, "completion": [{"role": "assistant", "content": completion}]}
            text = tokenizer.apply_chat_template(msgs + rec["completion"], tokenize=False)
        else:
            rec = {"prompt": render_prompt(tokenizer, prompt, problem), "completion": completion + tokenizer.eos_token}
            text = rec["prompt"] + rec["completion"]
        n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if n > max_length:
            dropped.append(pid)
            continue
        kept.append(rec)
        ids.append(pid)
        lengths.append(n)
    if dropped and on_overlength == "fail":
        raise OverlengthError(
            f"{len(dropped)} of {len(problem_ids)} traces are longer than training.max_length={max_length} tokens "
            f"(first: {dropped[:5]}); raise max_length or set training.on_overlength: drop")
    return TrainingSet(kept, ids, lengths, dropped)


def completion_tokens(tokenizer, records: Sequence[dict]) -> int:
    total = 0
    for r in records:
        c = r["completion"]
        total += len(tokenizer(c if isinstance(c, str) else c[0]["content"], add_special_tokens=False)["input_ids"]) + 1
    return total


def _lora_config(lora: dict):
    try:
        from peft import LoraConfig
    except ImportError:  # pragma: no cover - peft is a dependency; this guards a broken install
        raise RuntimeError("training.lora is set but peft is not installed: pip install peft") from None
    return LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                      target_modules="all-linear", task_type="CAUSAL_LM")


def fsdp_recomputes_activations() -> bool:
    """Whether `accelerate launch` runs this process under FSDP with its own activation checkpointing (the
    launcher's environment, as accelerate's FullyShardedDataParallelPlugin reads it)."""
    on = lambda name: os.environ.get(name, "false").strip().lower() in ("1", "true", "yes")  # noqa: E731
    return on("ACCELERATE_USE_FSDP") and on("FSDP_ACTIVATION_CHECKPOINTING")


def sft_config(job: FinetuneJob, output_dir: str, world_size: int = 1, cuda: bool | None = None):
    """TRL's SFTConfig for a job: DFT is `loss_type="dft"`, the loss is on completions only.

    On a GPU: bf16 compute over float32 weights and optimizer state (build_trainer loads them in float32),
    activations recomputed in the backward pass, by FSDP when it shards the model (transformers refuses
    gradient_checkpointing beside FSDP's activation_checkpointing; TRL turns it on by default), else by
    gradient checkpointing. On a CPU neither: the tiny students fit, and recomputing costs time.
    """
    import torch
    from trl import SFTConfig

    cuda = torch.cuda.is_available() if cuda is None else cuda
    micro = min(job.micro_batch_size, max(1, job.batch_size // world_size))  # per device
    return SFTConfig(
        output_dir=output_dir,
        loss_type="nll" if job.objective == "sft" else "dft",
        learning_rate=job.lr,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=max(1, job.batch_size // (micro * world_size)),
        num_train_epochs=job.epochs,
        lr_scheduler_type="cosine",
        warmup_steps=0.03,
        weight_decay=0.0,
        max_length=job.max_length,
        completion_only_loss=True,
        packing=False,
        seed=job.seed,
        data_seed=job.seed,
        logging_steps=1,
        # step checkpoints go to the job's temp folder, the latest one only (at 7B one holds ~100 GB of state)
        save_strategy="steps" if job.save_steps else "no",
        save_steps=job.save_steps or 500,
        save_total_limit=1,
        report_to="none",
        disable_tqdm=True,
        use_cpu=not cuda,
        bf16=cuda and (not torch.cuda.is_available() or torch.cuda.is_bf16_supported()),
        gradient_checkpointing=cuda and not fsdp_recomputes_activations(),
        dataloader_num_workers=0,
    )


def build_trainer(job: FinetuneJob, records: list[dict], log: Callable[[str], None] = print):
    """TRL's SFTTrainer for a job, exactly as `finetune` trains it (tests inspect its loss and labels)."""
    import torch
    from datasets import Dataset, disable_progress_bars
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback, set_seed
    from transformers.utils import logging as hf_logging
    from trl import SFTTrainer

    if not records:
        raise ValueError("no training examples left (all traces dropped as overlength?)")
    hf_logging.disable_progress_bar()
    disable_progress_bars()  # datasets' map bars; Progress reports to the run log instead
    set_seed(job.seed)
    tok = AutoTokenizer.from_pretrained(job.base_model, trust_remote_code=job.trust_remote_code)
    # float32 weights (and so gradients and AdamW state) everywhere: in bf16, an update below 2^-8 of a weight
    # is lost (lr 5e-5); on a GPU the forward and backward run in bf16 under autocast (sft_config's bf16)
    model = AutoModelForCausalLM.from_pretrained(job.base_model, dtype=torch.float32,
                                                 trust_remote_code=job.trust_remote_code)

    class Progress(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs and (state.global_step % 10 == 0 or state.global_step == state.max_steps):
                log(f"{job.objective} lr={job.lr:g} bs={job.batch_size}: step {state.global_step}/{state.max_steps} "
                    f"loss {logs['loss']:.4f}")

    # The launcher's WORLD_SIZE: torch.distributed is only initialised later, inside the trainer, so asking it
    # here would say 1 and double the effective batch on two devices.
    world = int(os.environ.get("WORLD_SIZE", "1"))
    trainer = SFTTrainer(
        model=model,
        args=sft_config(job, str(_work_dir(job)), world_size=world),
        train_dataset=Dataset.from_list(records),
        processing_class=tok,
        peft_config=_lora_config(job.lora) if job.lora else None,
        callbacks=[Progress()],
    )
    trainer.remove_callback(PrinterCallback)  # it prints every log dict to stdout; Progress reports instead
    return trainer


def _work_dir(job: FinetuneJob) -> Path:
    out = Path(job.out_dir)
    return out.parent / f".{out.name}.trainer"


def resume_point(job: FinetuneJob, is_main: bool | None = True) -> str | None:
    """The last step checkpoint of this same job in its temp folder (a run killed mid-training), or None.
    A temp folder left by a different job (other data, settings or base model) is emptied first."""
    work = _work_dir(job)
    marker = work / "qup_job.json"
    same = marker.is_file() and _identity(json.loads(marker.read_text())) == _identity(asdict(job))
    if not same:
        if is_main is not False:  # rank 0 owns the folder; the other ranks only read it
            import shutil

            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True, exist_ok=True)
            marker.write_text(json.dumps(asdict(job), sort_keys=True))
        return None
    if not job.save_steps:
        return None
    # a kill while a step checkpoint was being written leaves it without trainer_state.json (written last,
    # before the older checkpoint is rotated away): resume from the newest complete one
    done = sorted((p for p in work.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                  key=lambda p: int(p.name.split("-")[-1]), reverse=True)
    return next((str(p) for p in done if (p / "trainer_state.json").is_file()), None)


def finetune(job: FinetuneJob, records: list[dict], log: Callable[[str], None] = print,
             is_main: bool | None = None) -> FinetuneResult:
    """Train, then publish the model folder atomically (main process only) and return what happened."""

    import gc

    started = time.monotonic()
    # accelerate's free_memory runs a full gc.collect() after training: over a run worker's heap (Dagster, pandas,
    # the models of earlier steps) that was 0.2 s of a 0.8 s micro fine-tuning. What lives now outlives the
    # training: frozen, the collector skips it (thawed after, so nothing is held past the process's end).
    gc.freeze()
    out, work = Path(job.out_dir), _work_dir(job)
    resume = resume_point(job, is_main)
    trainer = build_trainer(job, records, log)
    tok = trainer.processing_class
    if resume:
        log(f"{job.objective} lr={job.lr:g} bs={job.batch_size}: resuming from {Path(resume).name} "
            "(a step checkpoint of this same job)")
    try:
        trained = trainer.train(resume_from_checkpoint=resume)
    finally:
        gc.unfreeze()
    curve = [(int(h["step"]), float(h["loss"])) for h in trainer.state.log_history if "loss" in h]
    main = trainer.accelerator.is_main_process if is_main is None else is_main
    # FSDP and ZeRO-3 shard the weights: every rank takes part in gathering them, the main process saves them
    sharded = getattr(trainer, "is_fsdp_enabled", False) or getattr(trainer, "is_deepspeed_enabled", False)
    state = trainer.accelerator.get_state_dict(trainer.model) if sharded else None
    result = FinetuneResult(
        path=str(out), objective=job.objective, lr=job.lr, batch_size=job.batch_size, examples=len(records),
        steps=int(trainer.state.global_step), tokens_trained=int(completion_tokens(tok, records) * job.epochs),
        train_loss=float(trained.training_loss), wall_time_s=round(time.monotonic() - started, 1), loss_curve=curve,
    )
    if main:
        final = trainer.model
        if job.lora:
            final = final.merge_and_unload()
        final = trainer.accelerator.unwrap_model(final)
        final.generation_config.eos_token_id = tok.eos_token_id
        final.generation_config.pad_token_id = tok.pad_token_id

        def save(tmp):
            final.save_pretrained(tmp, **({"state_dict": state} if state is not None else {}))
            tok.save_pretrained(tmp)
            (Path(tmp) / "qup_training.json").write_text(
                json.dumps({"job": asdict(job), "result": asdict(result)}, indent=2, sort_keys=True))

        publish_dir(save, out)
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return result


def stops_with_eos(model_dir: str, prompts: Sequence[str], max_tokens: int, trust_remote_code: bool = False) -> float:
    """Share of greedy generations that end with eos before max_tokens: a model that never stops is broken."""

    lm = TransformersBackend(model_dir, trust_remote_code=trust_remote_code)
    outs = lm.sample([Request(p) for p in prompts], SamplingParams(temperature=0.0, max_tokens=max_tokens))
    return sum(o.finish_reason == "stop" for o in outs) / max(1, len(outs))
