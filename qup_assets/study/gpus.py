"""How many GPUs each engine of a study asks for, and which GPUs its `hardware:` leaves to them: facts of the
study file, checked when it loads (schema.py) and used to lease GPUs per step (qup_assets/devices.py)."""

from __future__ import annotations


def student_gpus(study) -> list[int]:
    """The GPU ids the study's own engines may use: the machine's, less those the Oracle's server holds."""
    hw = study.hardware
    if hw is None:
        return []
    return [i for i in range(hw.gpus_per_node) if i not in set(hw.oracle_gpus)]


def gpus_needed(study, stage: str, family: str | None = None, reward_model: str | None = None) -> int:
    """How many GPUs one step of `stage` leases: 0 on a CPU study (no hardware:).

    generate: a family's sampling or evaluation engine (its vLLM tensor-parallel size, 0 for an OpenAI-compatible
    server, else 1);
    train: one fine-tuning (accelerate's processes on this machine, else 1);
    reward: one reward model (its vLLM tensor-parallel size, else 1), or without `reward_model` the largest of
    them (a step that scores with every RM, one after the other);
    oracle: the Oracle when it runs in the step (a vllm or transformers backend; an openai server holds its own);
    model: any other single model on one GPU (perplexity, a synthetic student's pretraining)."""
    if study.hardware is None:
        return 0
    if stage == "generate":
        fam = study.families[family]
        if fam.backend.kind == "openai":
            return 0  # a server elsewhere generates; its GPUs are its own
        return (fam.backend.engine.tensor_parallel_size or 1) if fam.backend.kind == "vllm" else 1
    if stage == "train":
        tr = study.training
        return tr.num_processes // tr.distributed.num_machines if tr.launcher == "accelerate" else 1
    if stage == "reward":
        rms = [r for r in study.reward_models if reward_model in (None, r.name)]
        # the synthetic world's symbolic process RM computes on the CPU
        return max(0 if r.kind == "symbolic_process" else (r.engine.tensor_parallel_size or 1) if r.backend == "vllm"
                   else 1 for r in rms)
    if stage == "oracle":
        b = study.oracle.backend
        if study.oracle.kind != "llm" or b is None or b.kind == "openai":
            return 0
        return (b.engine.tensor_parallel_size or 1) if b.kind == "vllm" else 1
    if stage == "model":
        return 1
    raise ValueError(f"unknown GPU stage {stage!r}")


def every_need(study) -> list[tuple[str, int]]:
    """(the setting that asks, GPUs) for every engine of the study: what `hardware:` must be able to give."""
    out = [(f"families.{f}.backend.engine.tensor_parallel_size", gpus_needed(study, "generate", f))
           for f in study.families]
    tr = study.training
    out.append(("training.num_processes" if tr.launcher == "accelerate" else "training", gpus_needed(study, "train")))
    out += [(f"reward_models.{r.name}.engine.tensor_parallel_size", gpus_needed(study, "reward", reward_model=r.name))
            for r in study.reward_models]
    out.append(("oracle.backend.engine.tensor_parallel_size", gpus_needed(study, "oracle")))
    return out
