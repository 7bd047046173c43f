"""What a study will cost before it runs: samples, rewrites, scores, checkpoints and evaluations, and the
GPU-hours they take on an H100, so a GPU run is sized before it starts (`qup plan`). Upper bounds: every
generation and trace is counted at its max_tokens."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from qup_assets import variants
from qup_assets.backends.base import BackendError
from qup_assets.backends.hub import model_size, resolve_model
from qup_assets.common import format_params
from qup_assets.storage.catalog import list_tables, query
from qup_assets.storage.tables import table_path
from qup_assets.study import Study
from qup_assets.world.student import expected_parameters

# One H100 80 GB, a 1.5B model, the transformers backend in bf16, measured by the team for issue 16:
# generation 3.7k tokens/s at batch 256, NLL scoring 108k tokens/s, full fine-tuning 30k tokens/s. Other
# sizes scale by parameter count (decoding and scoring are bound by reading the weights; training by
# FLOPs, ~6 x params per token). vLLM generates several times faster than the transformers backend, so
# these hours are an upper bound for vLLM families too.
H100_TOKENS_PER_S = {"generate": 3_700.0, "score": 108_000.0, "train": 30_000.0}
REFERENCE_PARAMS = 1.5e9
# What a study should cost, beside the bound: vLLM's published offline throughput, ~12,500 output tokens/s for
# Llama-3.1-8B in bf16 on one H100 80 GB (third-party benchmarks collected at morphllm.com/vllm-benchmarks,
# 2026; decoding is bound by reading the weights, so other sizes scale by parameter count), and a stated prior
# for how long an answer is until the study's own samples say (`n_tokens` of native_samples): a worked
# solution of a NuminaMath-CoT problem, ~600 tokens. Replace both with the GPU check's measurements.
VLLM_H100_TOKENS_PER_S, VLLM_REFERENCE_PARAMS = 12_500.0, 8e9
PRIOR_ANSWER_TOKENS, PRIOR_PROMPT_TOKENS = 600, 200

# Items in the public benchmarks (their dataset cards), for a plan made before they are on disk.
PUBLISHED_BENCHMARK_ITEMS = {"HuggingFaceH4/MATH-500": 500, "math-ai/minervamath": 272, "math-ai/aime24": 30,
                             "math-ai/amc23": 40, "math-ai/olympiadbench": 675}

def params_from_name(model: str | None) -> float | None:
    """Parameters from a model id that states them (Qwen/Qwen2.5-Math-7B -> 7e9, ...-RM-72B -> 72e9)."""
    m = re.search(r"(\d+(?:\.\d+)?)\s*[bB](?![a-zA-Z])", model or "")
    return float(m.group(1)) * 1e9 if m else None


def family_size(study: Study, name: str, store: Path) -> tuple[str, float | None, str]:
    """(lineage, parameters, where they come from) of a family: its materialized base_model (read from the
    model folder), else the local model folder, else the synthetic architecture's arithmetic or the model id."""
    fam = study.families[name]
    built = table_path(store, "base_model", name).with_suffix(".json")
    if built.is_file():
        info = json.loads(built.read_text(encoding="utf-8"))
        if info.get("parameters"):
            return fam.lineage or info.get("lineage") or "unknown", info["parameters"], "model folder"
    st = fam.student
    if st.kind == "synthetic":
        return (fam.lineage or st.architecture, expected_parameters(st.architecture, st.hidden_size, st.num_layers),
                "architecture with a 640-token vocabulary, until base_model builds it")
    try:
        lineage, params = model_size(resolve_model(st.model, st.revision))
        if params:
            return fam.lineage or lineage, params, "model folder"
    except (BackendError, OSError, ValueError):
        pass
    return fam.lineage or "unknown", params_from_name(st.model), "model id; the folder is not on this machine"


def benchmark_items(study: Study, store: Path) -> tuple[int | None, str]:
    """(items, where the number comes from): the materialized benchmarks table, the study's sizes, local
    files, or the benchmarks' published sizes."""

    if "benchmarks" in list_tables(store):
        return int(query(store, "select count(*) as n from benchmarks")["n"][0]), "benchmarks table"
    total, sources = 0, set()
    for b in study.benchmarks:
        src = b.source
        if getattr(src, "size", None):
            total += src.size
            sources.add("study")
        elif src.kind == "local" and Path(src.path).is_file():
            total += sum(1 for line in Path(src.path).open(encoding="utf-8") if line.strip())
            sources.add("local files")
        elif src.kind == "hf" and src.name in PUBLISHED_BENCHMARK_ITEMS:
            total += PUBLISHED_BENCHMARK_ITEMS[src.name]
            sources.add("published sizes")
        else:
            return None, f"size of {b.name} not known"
    return total, ", ".join(sorted(sources))


def gpu_hours(tokens: float | None, stage: str, params: float | None, engine: str = "transformers") -> float | None:
    """Hours on one H100 for `tokens` at the measured rate of `stage`, scaled to a model of `params`; generation
    on a vLLM engine at vLLM's published rate."""
    if tokens is None or params is None:
        return None
    if stage == "generate" and engine == "vllm":
        return tokens / (VLLM_H100_TOKENS_PER_S * VLLM_REFERENCE_PARAMS / params) / 3600
    return tokens / (H100_TOKENS_PER_S[stage] * REFERENCE_PARAMS / params) / 3600


def answer_tokens(store: Path, family: str) -> tuple[float, str]:
    """How long a family's answers are: the mean of its own native samples once they exist, else the prior."""
    samples = table_path(store, "native_samples", family)
    if samples.is_file():
        import pandas as pd

        n = pd.read_parquet(samples, columns=["n_tokens"])["n_tokens"]
        if len(n):
            return float(n.mean()), f"its {len(n):,} native samples"
    return float(PRIOR_ANSWER_TOKENS), "prior"


def _mul(*xs):
    return None if any(x is None for x in xs) else math.prod(xs)


def stage_hours(study: Study, params, pool, items, ckpts: int, n_var: int, sample, answer, train,
                engine: str = "transformers") -> dict:
    """H100-hours per stage of one family of `params`: N samples of `sample` tokens per pool problem, perplexity
    and every RM over each variant's traces, fine-tunings on `train` tokens per example, evaluation answers of
    `answer` tokens; None where a size is unknown. The upper bound and the expected figure differ only in those
    lengths and the engine."""
    s, ev, tr = study.sampling, study.evaluation, study.training
    stages = {
        "sampling": gpu_hours(_mul(s.n, pool, sample), "generate", params, engine),
        "perplexity": gpu_hours(_mul(n_var, pool, sample), "score", params),
        "training": gpu_hours(_mul(ckpts, pool, tr.epochs, train), "train", params),
        "evaluation": gpu_hours(_mul(1 + ckpts, items, ev.k, answer), "generate", params, engine),
    }
    for rm in study.reward_models:
        if rm.kind == "symbolic_process":  # the synthetic world's checker: CPU arithmetic, no GPU
            continue
        stages[f"rewards {rm.name}"] = gpu_hours(_mul(n_var, pool, sample), "score", params_from_name(rm.model))
    return stages


def _family_rows(rows: list, label: str, name: str, stages: dict) -> float:
    """A family's stage hours and their total (unknown when a stage is) as plan rows; the known hours."""
    known = [h for h in stages.values() if h is not None]
    rows.append((label, ", ".join(f"{k} {_h(v)}" for k, v in stages.items())))
    rows.append((f"  {name} total", _h(sum(known)) if len(known) == len(stages) else "unknown"))
    return sum(known)


def estimate(study: Study, store: Path) -> list[tuple[str, str]]:
    """Upper bounds of the work a study asks for, in total over its families, then H100 GPU-hours per stage."""
    pool = getattr(study.problems, "size", None)
    items, items_from = benchmark_items(study, store)
    n_fam = len(study.families)
    n_var, n_oracle = len(variants.names()), len(variants.oracle_tasks())  # the registry's variants
    grid = len(study.training.grid.lr) * len(study.training.grid.batch_size) if study.training.grid else 1
    ckpts = n_var * len(study.training.objectives) * grid
    s, ev, tr, o = study.sampling, study.evaluation, study.training, study.oracle

    def fmt(x):
        return "unknown (size not set)" if x is None else f"{x:,.0f}"


    rows = [
        ("problems in pool", fmt(pool)),
        (f"benchmark items ({items_from})", fmt(items)),
        ("native samples (N x pool x families)", fmt(_mul(s.n, pool, n_fam))),
        ("  tokens to generate, at most", fmt(_mul(s.n, pool, n_fam, s.max_tokens))),
        ("variants", ", ".join(f"{v.name} ({v.source})" for v in variants.all_variants())),
        (f"oracle rewrites ({n_oracle} variants x pool x families), at most", fmt(_mul(n_oracle, pool, n_fam))),
        ("  oracle tokens, at most", fmt(_mul(n_oracle, pool, n_fam, o.max_tokens))),
        ("reward scores (variants x pool x RMs x families)", fmt(_mul(n_var, pool, len(study.reward_models), n_fam))),
        ("perplexity passes (variants x pool x families)", fmt(_mul(n_var, pool, n_fam))),
        *[(f"  {v.name}: candidates scored, at most ((N - 1 samples) + {n_oracle} Oracle traces) x pool x families",
           fmt(_mul(s.n - 1 + n_oracle, pool, n_fam))) for v in variants.sources("selected")],
        ("fine-tuned checkpoints", fmt(ckpts * n_fam)),
        ("  training examples seen, at most", fmt(_mul(ckpts, pool, tr.epochs, n_fam))),
        ("models evaluated (base + checkpoints) x families", fmt((1 + ckpts) * n_fam)),
        ("eval samples ((1 + checkpoints) x items x k x families)", fmt(_mul(1 + ckpts, items, ev.k, n_fam))),
        ("  eval tokens, at most", fmt(_mul(1 + ckpts, items, ev.k, n_fam, ev.max_tokens))),
    ]
    sizes = {name: family_size(study, name, store) for name in study.families}
    rows += [(f"family {name}", f"{lineage}, {'~' if src.startswith('architecture') else ''}{format_params(p)} "
              f"parameters (from the {src})") for name, (lineage, p, src) in sizes.items()]
    hf = {name: sizes[name][1] for name, f in study.families.items() if f.student.kind == "hf"}
    if not hf:
        return rows + [("GPU-hours", "synthetic students: CPU scale, see make bench")]
    rows.append(("H100 GPU-hours, at most (transformers-backend rates, README):", ""))
    total = 0.0
    for name, p in hf.items():
        stages = stage_hours(study, p, pool, items, ckpts, n_var, s.max_tokens, ev.max_tokens, tr.max_length)
        total += _family_rows(rows, f"  {name} ({format_params(p) if p else 'size unknown'})", name, stages)
    if o.kind == "llm":
        oracle = gpu_hours(_mul(n_oracle, pool, n_fam, o.max_tokens), "generate", params_from_name(o.model))
        rows.append((f"  oracle {o.model} (all families)", _h(oracle)))
        total += oracle or 0.0
    rows.append(("  all stages, all families", _h(total)))
    return rows + expected(study, store, hf, pool, items, ckpts, n_var, n_oracle)


def expected(study: Study, store: Path, hf: dict, pool, items, ckpts: int, n_var: int, n_oracle: int) -> list:
    """H100-hours the study should take: answers of their expected length (not max_tokens), generation at the
    rate of the engine each family names, training on prompt + answer (not max_length)."""
    if pool is None or items is None:
        return [("H100 GPU-hours, expected", "unknown (pool or benchmark size not known)")]
    s, ev, tr, o = study.sampling, study.evaluation, study.training, study.oracle
    rows = [("H100 GPU-hours, expected (vLLM's published rate where a family uses vLLM; answer lengths below):", "")]
    total = 0.0
    for name, p in hf.items():
        engine = study.families[name].backend.kind
        length, source = answer_tokens(store, name)
        sample = min(length, s.max_tokens)
        stages = stage_hours(study, p, pool, items, ckpts, n_var, sample, min(length, ev.max_tokens),
                             min(tr.max_length, PRIOR_PROMPT_TOKENS + sample), engine)
        total += _family_rows(rows, f"  {name} ({engine}, answers ~{length:,.0f} tokens: {source})", name, stages)
    if o.kind == "llm":
        served = o.backend is not None and o.backend.kind in ("openai", "vllm")  # vllm serve, or the engine itself
        oracle = gpu_hours(n_oracle * pool * len(hf) * min(PRIOR_ANSWER_TOKENS, o.max_tokens), "generate",
                           params_from_name(o.model), "vllm" if served else "transformers")
        rows.append((f"  oracle {o.model} (all families, {'vLLM' if served else 'transformers'})", _h(oracle)))
        total += oracle or 0.0
    rows.append(("  all stages, all families, expected", _h(total)))
    return rows


def _h(hours: float | None) -> str:
    return "unknown" if hours is None else f"{hours:,.0f} h" if hours >= 10 else f"{hours:.1f} h"
