"""Per-GPU memory a study asks for, before it runs: fine-tuning (weights, gradients, float32 master weights
and AdamW state, activations with or without recomputation, the logits of one micro-batch) and every vLLM
engine (weights and the KV cache of max_num_seqs sequences), against the study's `hardware:`.

Estimates, deliberately on the high side, from each model's config.json (its local folder, or the published
config of the paper's models when the folder is not on this machine). `qup plan` prints them; `qup run`
refuses a study whose training cannot fit, naming the number and the setting to change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from qup_assets.backends.base import BackendError
from qup_assets.backends.hub import model_size, resolve_model
from qup_assets.study import Study

GB = 1e9


@dataclass(frozen=True)
class Shape:
    """What memory depends on, from config.json (and the safetensors headers for the parameter count)."""

    params: float
    hidden: int
    layers: int
    vocab: int
    kv_heads: int
    head_dim: int
    context: int  # max_position_embeddings


# config.json of the paper's models as published on the Hub (parameters from their safetensors index), for a
# plan made on a machine without them.
PUBLISHED = {
    "Qwen/Qwen2.5-Math-1.5B": Shape(1.54e9, 1536, 28, 151936, 2, 128, 4096),
    "Qwen/Qwen2.5-Math-7B": Shape(7.62e9, 3584, 28, 152064, 4, 128, 4096),
    "Qwen/Qwen2.5-Math-7B-Instruct": Shape(7.62e9, 3584, 28, 152064, 4, 128, 4096),
    "meta-llama/Llama-3.2-3B": Shape(3.21e9, 3072, 28, 128256, 8, 128, 131072),
    "deepseek-ai/deepseek-math-7b-base": Shape(6.91e9, 4096, 30, 102400, 32, 128, 4096),
    "Qwen/Qwen2.5-Math-72B-Instruct": Shape(72.7e9, 8192, 80, 152064, 8, 128, 4096),
    "Qwen/Qwen2.5-Math-RM-72B": Shape(72.7e9, 8192, 80, 152064, 8, 128, 4096),
    "Skywork/Skywork-Reward-Llama-3.1-8B-v0.2": Shape(7.5e9, 4096, 32, 128256, 8, 128, 131072),
}


def shape_of(folder: Path | None, model_id: str | None) -> Shape | None:
    """The model's shape from its local folder's config.json, else the published one, else None (also when
    the folder's parameter count is unknown: no safetensors, not a published model)."""
    published = PUBLISHED.get(model_id or "")
    if folder is not None and (Path(folder) / "config.json").is_file():
        c = json.loads((Path(folder) / "config.json").read_text())
        c = c.get("text_config", c)
        heads = c.get("num_attention_heads") or 1
        hidden = c["hidden_size"]
        params = model_size(Path(folder))[1] or (published.params if published else None)
        if params is None:
            return None
        return Shape(float(params), hidden, c["num_hidden_layers"], c["vocab_size"], c.get("num_key_value_heads") or heads,
                     c.get("head_dim") or hidden // heads, c.get("max_position_embeddings") or 0)
    return published


def local_folders(study: Study):
    """family name -> its HF student's local folder, or None (not on this machine, or a synthetic student)."""

    def folder(name: str) -> Path | None:
        st = study.families[name].student
        if st.kind != "hf":
            return None
        try:
            return resolve_model(st.model, st.revision)
        except (BackendError, OSError, ValueError):
            return None

    return folder


def training_gb(shape: Shape, micro_batch: int, seq: int, gpus: int, sharded: bool, recompute: bool) -> dict:
    """Peak per GPU of one full fine-tuning rank, in GB, by part. Float32 weights, gradients and AdamW's two
    moments (16 bytes per parameter), split over the GPUs when sharded (FSDP, ZeRO-3); bf16 activations
    (~34 bytes per token per hidden unit per layer without recomputation, Korthikanti et al. 2022; with it,
    each layer's input plus one layer recomputed); logits in bf16, their float32 copy for the loss and its
    gradient (10 bytes per token per vocabulary entry)."""
    tokens = micro_batch * seq
    states = 16 * shape.params / (gpus if sharded else 1)
    per_layer = 34 * tokens * shape.hidden
    acts = (2 * tokens * shape.hidden * shape.layers + per_layer) if recompute else per_layer * shape.layers
    logits = 10 * tokens * shape.vocab
    parts = {"weights, gradients, AdamW (fp32)": states, "activations": acts, "logits": logits}
    return {k: v / GB for k, v in parts.items()} | {"total": sum(parts.values()) / GB}


def engine_gb(shape: Shape, max_num_seqs: int, max_model_len: int, tensor_parallel: int) -> dict:
    """Per GPU of a vLLM engine, in GB: bf16 weights split over its tensor-parallel GPUs, and the KV cache that
    max_num_seqs sequences of max_model_len tokens need (2 x layers x kv_heads x head_dim x 2 bytes per token)."""
    kv_per_token = 2 * shape.layers * shape.kv_heads * shape.head_dim * 2
    weights = 2 * shape.params / tensor_parallel
    kv = kv_per_token * max_num_seqs * max_model_len / tensor_parallel
    return {"weights (bf16)": weights / GB, "KV cache for all sequences": kv / GB, "total": (weights + kv) / GB,
            "kv_per_token": kv_per_token / tensor_parallel}


def _rows_gb(parts: dict) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in parts.items() if k not in ("total", "kv_per_token"))


def _vllm_engine(rows: list, problems: list, label: str, who: str, setting: str, shape: Shape, e, cap: float) -> None:
    """One vLLM engine's row (weights, KV cache, how many full-length sequences fit) and, when its weights alone
    do not fit the share of the GPU it may take, the problem naming `setting`."""
    seqs = e.max_num_seqs or 256
    tp = e.tensor_parallel_size or 1
    ctx = e.max_model_len or shape.context
    g = engine_gb(shape, seqs, ctx, tp)
    budget = cap * (e.gpu_memory_utilization or 0.9)
    fits = int(max(0.0, budget - g["weights (bf16)"] - 2.0) * GB // (g["kv_per_token"] * ctx))
    rows.append((f"  {label}", f"weights {g['weights (bf16)']:.1f} GB + KV cache "
                 f"{g['KV cache for all sequences']:.1f} GB for {seqs} x {ctx} tokens; "
                 f"{min(fits, seqs)} of {seqs} sequences fit at full length in {budget:.0f} GB"))
    if g["weights (bf16)"] + 2.0 > budget:
        problems.append(f"{who}: the vLLM engine's weights ({g['weights (bf16)']:.1f} GB per GPU) do not fit "
                        f"gpu_memory_utilization x hardware.gpu_memory_gb = {budget:.0f} GB: raise {setting}")


def check(study: Study, model_dir=lambda family: None) -> tuple[list[tuple[str, str]], list[str]]:
    """(rows for `qup plan`, problems that cannot fit): training per GPU for every family with known shape, and
    every vLLM engine. `model_dir(family)` gives a family's local folder when known (else the published shape)."""
    hw = study.hardware
    if hw is None:
        return [("GPU memory", "no hardware: section in the study (a CPU study): not checked")], []
    rows, problems = [], []
    cap = hw.gpu_memory_gb
    tr = study.training
    gpus = tr.num_processes // tr.distributed.num_machines if tr.launcher == "accelerate" else 1
    sharded = tr.launcher == "accelerate" and tr.distributed.strategy in ("fsdp", "deepspeed_zero3")
    for name, fam in study.families.items():
        model = fam.student.model if fam.student.kind == "hf" else None
        shape = shape_of(model_dir(name), model)
        if shape is None:
            rows.append((f"  {name}", "shape unknown (no local config.json, not a published model here): not checked"))
            continue
        micro = min(tr.micro_batch_size, max(1, tr.batch_size // max(1, tr.num_processes)))
        t = training_gb(shape, micro, tr.max_length, gpus, sharded, recompute=True)
        rows.append((f"  {name} training per GPU ({'sharded over ' + str(gpus) if sharded else 'whole'})",
                     f"{t['total']:.1f} GB of {cap:g} ({_rows_gb(t)})"))
        if t["total"] > cap * 0.95:
            problems.append(
                f"family {name}: fine-tuning needs ~{t['total']:.0f} GB per GPU ({_rows_gb(t)} GB) of "
                f"hardware.gpu_memory_gb {cap:g}: lower training.micro_batch_size ({tr.micro_batch_size}; the logits of "
                f"one micro-batch of {tr.max_length} tokens alone are {t['logits']:.1f} GB)"
                + ("" if sharded else " or shard the model (training.launcher accelerate, distributed.strategy fsdp)"))
        if fam.backend.kind == "vllm":
            _vllm_engine(rows, problems, f"{name} vLLM engine per GPU", f"family {name}", "engine.tensor_parallel_size",
                         shape, fam.backend.engine, cap)
    o = study.oracle
    if o.kind == "llm" and o.backend is not None and o.backend.kind == "vllm":
        shape = shape_of(None, o.model)
        if shape is not None:
            _vllm_engine(rows, problems, f"oracle {o.model} vLLM engine per GPU", "the Oracle",
                         "oracle.backend.engine.tensor_parallel_size", shape, o.backend.engine, cap)
    for rm in study.reward_models:
        shape = shape_of(None, rm.model)
        if shape is None or rm.kind == "synthetic":
            continue
        need = 2 * shape.params / GB
        tp = (rm.engine.tensor_parallel_size or 1) if rm.backend == "vllm" else 1
        where = f"vLLM, tensor parallel {tp}" if rm.backend == "vllm" else "transformers, on the one GPU it is given"
        per_gpu = need / tp
        rows.append((f"  reward model {rm.name} ({where})", f"bf16 weights {need:.0f} GB, {per_gpu:.1f} GB per GPU"))
        if per_gpu + 2.0 > cap:
            problems.append(f"reward model {rm.name}: {per_gpu:.0f} GB of weights per GPU do not fit "
                            f"hardware.gpu_memory_gb {cap:g}: " + ("raise its engine.tensor_parallel_size"
                            if rm.backend == "vllm" else "score it through vLLM (backend: vllm) with "
                            "engine.tensor_parallel_size"))
    return rows, problems
