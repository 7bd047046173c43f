"""The utility side of the paradox: `{variant}_checkpoints`, `{variant}_eval` and `base_eval` per family."""

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import dagster as dg
import pandas as pd
import yaml

from qup_assets.assets.metadata import md_table, plot_markdown, versioned
from qup_assets.assets.partitions import model_family
from qup_assets.assets.quality import ALL_VARIANTS, on_common_set
from qup_assets.assets.resources import ACCELERATOR, StudyResource
from qup_assets.backends.base import BackendError
from qup_assets.backends.factory import load_tokenizer
from qup_assets.backends.prompting import render_prompt
from qup_assets.evaluation.evaluate import evaluate_model
from qup_assets.evaluation.metrics import EVAL_COLUMNS, MACRO
from qup_assets.storage.tables import artifact_dir, write_parquet_atomic
from qup_assets.study import Study, Training
from qup_assets.training.finetune import (
    FinetuneJob,
    FinetuneResult,
    OverlengthError,
    build_training_set,
    finetune,
    finished_result,
    records_hash,
    stops_with_eos,
)
from qup_assets.training.launch import accelerate_config

CHECKPOINT_COLUMNS = [
    "model_family", "objective", "lr", "batch_size", "path", "examples", "dropped_overlength", "steps",
    "tokens_trained", "train_loss", "eos_rate", "wall_time_s", "loss_curve",
]


def grid_points(training: Training) -> list[tuple[str, float, int]]:
    """(objective, lr, batch_size) for every checkpoint the study asks for; the grid replaces lr x batch."""
    lrs = training.grid.lr if training.grid else [training.lr]
    batches = training.grid.batch_size if training.grid else [training.batch_size]
    return [(o, lr, b) for o in training.objectives for lr in lrs for b in batches]


def point_name(objective: str, lr: float, batch_size: int, training: Training) -> str:
    return objective if not training.grid else f"{objective}-lr{lr:g}-bs{batch_size}"


def _group(variant: str) -> str:
    return "students" if variant == "native" else variant


def _run_accelerate(context: dg.AssetExecutionContext, job: FinetuneJob, records: list[dict],
                    training: Training) -> FinetuneResult:
    """Several devices: `accelerate launch` in a subprocess through Dagster Pipes; rank 0 reports back."""
    job_dir = Path(job.out_dir).parent / f".{Path(job.out_dir).name}.job"
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "job.json").write_text(json.dumps(asdict(job)))
    (job_dir / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (job_dir / "result.json").unlink(missing_ok=True)
    cuda = _cuda_available()
    (job_dir / "accelerate.yaml").write_text(
        yaml.safe_dump(accelerate_config(training.num_processes, training.distributed, cuda)))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(job_dir / "accelerate.yaml")]
    env = dict(os.environ)
    if training.num_processes > 1 and not cuda:
        # accelerate's torchrun launcher runs the ranks on the CPU with gloo when told to (its own
        # multi-CPU launcher needs mpirun)
        env["ACCELERATE_USE_CPU"] = "true"
    cmd += ["-m", "qup_assets.training.launch", str(job_dir)]
    # A Pipes session rather than PipesSubprocessClient: the asset returns its table through the IO manager,
    # while the launched ranks only stream logs (rank 0) into this run's log.
    with dg.open_pipes_session(context=context, context_injector=dg.PipesTempFileContextInjector(),
                               message_reader=dg.PipesTempFileMessageReader()) as session:
        proc = subprocess.run(cmd, env={**env, **session.get_bootstrap_env_vars()})
    if proc.returncode != 0 or not (job_dir / "result.json").exists():
        raise dg.Failure(description=f"accelerate launch exited with code {proc.returncode} for {job.out_dir}; "
                         f"the job is kept in {job_dir} (run the command by hand to debug: {' '.join(cmd)})")
    return FinetuneResult.from_dict(json.loads((job_dir / "result.json").read_text()))


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _loss_plot(curves: dict[str, list], title: str) -> str:
    def draw(ax):
        for name, curve in curves.items():
            ax.plot([s for s, _ in curve], [l for _, l in curve], label=name)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss (completion tokens)")
        ax.set_yscale("log")
        ax.legend(fontsize=7)

    return plot_markdown(draw, title)


def build_checkpoints_asset(variant: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=f"{variant}_checkpoints",
        partitions_def=model_family,
        group_name=_group(variant),
        code_version="2",
        kinds={"pytorch"},
        **ACCELERATOR,
        ins={"traces": dg.AssetIn(f"{variant}_traces")},
        description=f"The family's base model fine-tuned on {variant} traces of its common problem set with TRL's "
        "SFTTrainer: one HF model folder per objective (sft = NLL, dft = SFTConfig(loss_type='dft')) and grid point, "
        "loss on the completion only, eos appended, written atomically. Overlength traces are dropped with a count "
        "(or refused), never cut.",
    )
    def _asset(context: dg.AssetExecutionContext, study: StudyResource, base_model: dict, traces: pd.DataFrame,
               common_problems: pd.DataFrame, problem_pool: pd.DataFrame) -> dg.Output[pd.DataFrame]:
        s = study.load()
        name = context.partition_key
        fam = study.family(s, name)
        tr = s.training
        t = on_common_set(traces, common_problems).merge(problem_pool[["problem_id", "problem"]], on="problem_id")
        base_path = study.model_path(base_model)
        tok = load_tokenizer(base_path, fam.trust_remote_code)
        try:
            data = build_training_set(tok, fam.prompt, list(t["problem_id"]), list(t["problem"]),
                                      list(t["completion"]), tr.max_length, tr.on_overlength)
        except OverlengthError as e:
            raise dg.Failure(description=f"{name}/{variant}: {e}") from None
        if data.dropped:
            context.log.warning(f"{name}/{variant}: dropped {len(data.dropped)} overlength traces "
                                f"({data.drop_rate:.1%}) over max_length={tr.max_length}")
        probe = [render_prompt(tok, fam.prompt, p) for p in t["problem"].head(8)]
        data_hash = records_hash(data.records, base_model.get("fingerprint", base_path))
        reused = 0
        rows, curves = [], {}
        out_root = artifact_dir(study.store, f"{variant}_checkpoints", name)
        for objective, lr, batch in grid_points(tr):
            point = point_name(objective, lr, batch, tr)
            job = FinetuneJob(base_model=base_path, out_dir=str(out_root / point), objective=objective,
                              lr=lr, batch_size=batch, micro_batch_size=tr.micro_batch_size, epochs=tr.epochs,
                              max_length=tr.max_length, seed=tr.seed,
                              lora=tr.lora.model_dump() if tr.lora else None, trust_remote_code=fam.trust_remote_code,
                              data_hash=data_hash, save_steps=tr.save_steps)
            res = finished_result(job)
            if res is not None:
                reused += 1
                context.log.info(f"{name}/{variant}: {point} already trained on the same data, reusing {res.path}")
            elif tr.launcher == "accelerate":
                context.log.info(f"{name}/{variant}: training {point} on {len(data.records)} traces")
                res = _run_accelerate(context, job, data.records, tr)
            else:
                context.log.info(f"{name}/{variant}: training {point} on {len(data.records)} traces")
                res = finetune(job, data.records, log=context.log.info)
            eos = stops_with_eos(res.path, probe, s.evaluation.max_tokens, fam.trust_remote_code)
            if eos == 0:
                raise dg.Failure(description=f"{name}/{variant}/{point}: the fine-tuned model never emits eos on "
                                 f"{len(probe)} training prompts; check the chat template's end-of-turn token")
            curves[point] = res.loss_curve
            rows.append({"model_family": name, "objective": objective, "lr": lr, "batch_size": batch,
                         "path": res.path, "examples": res.examples, "dropped_overlength": len(data.dropped),
                         "steps": res.steps, "tokens_trained": res.tokens_trained, "train_loss": res.train_loss,
                         "eos_rate": eos, "wall_time_s": res.wall_time_s, "loss_curve": json.dumps(res.loss_curve)})
        df = pd.DataFrame(rows, columns=CHECKPOINT_COLUMNS)
        # An explicit Output: a Pipes session (the accelerate launcher) requires a typed event stream.
        return versioned(df, metadata={
            "dagster/row_count": len(df),
            "checkpoints": md_table(df.drop(columns=["model_family", "loss_curve"]), max_rows=20, width=120),
            "loss_curves": dg.MetadataValue.md(_loss_plot(curves, f"{name}: fine-tuning on {variant}")),
            "examples": len(data.records),
            "dropped_overlength": len(data.dropped),
            "drop_rate": dg.MetadataValue.float(data.drop_rate),
            "max_tokens_per_example": max(data.lengths, default=0),
            "tokens_trained": int(df["tokens_trained"].sum()),
            "steps": int(df["steps"].sum()),
            "wall_time_s": float(df["wall_time_s"].sum()),
            "launcher": tr.launcher,
            "reused_checkpoints": reused,
            "checkpoint_dir": dg.MetadataValue.path(str(out_root)),
        })

    return _asset


checkpoint_assets = [build_checkpoints_asset(v) for v in ALL_VARIANTS]


# ---------------------------------------------------------------- evaluation


def evaluate(context: dg.AssetExecutionContext, study: StudyResource, s: Study, family: str, model_path: str,
             benchmarks: pd.DataFrame, label: str) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """evaluate_model with the study's family, cache and verifier; a backend that cannot open fails the asset."""
    with study.verifier(s) as verifier:
        try:
            return evaluate_model(family, study.family(s, family), model_path, benchmarks, s.evaluation,
                                  study.cache_dir, verifier, label=label, log=context.log.info)
        except BackendError as e:
            raise dg.Failure(description=f"{family}/{label}: {e}") from None


def per_problem_path(store: Path, eval_asset: str, family: str) -> Path:
    """Where an eval asset keeps its per-problem accuracies (read by the report's paired bootstraps)."""
    return artifact_dir(store, eval_asset, family) / "per_problem.parquet"


def _publish_eval(context: dg.AssetExecutionContext, study: StudyResource, tables: list[pd.DataFrame],
                  problems: list[pd.DataFrame], stats: dict, started: float) -> dg.Output[pd.DataFrame]:
    """The eval table, with its per-problem accuracies written beside it and the metadata attached."""
    df = pd.concat(tables, ignore_index=True)[EVAL_COLUMNS]
    pp = write_parquet_atomic(pd.concat(problems, ignore_index=True),
                              per_problem_path(study.store, context.asset_key.path[-1], context.partition_key))
    context.add_output_metadata(_eval_metadata(df, pp, stats, started))
    return versioned(df)


def _eval_metadata(df: pd.DataFrame, per_problem_path: Path, stats: dict, started: float) -> dict:
    macro = df[df["benchmark"] == MACRO]
    show = df.assign(ci=[f"[{lo:.3f}, {hi:.3f}]" for lo, hi in zip(df["ci_low"], df["ci_high"])])
    meta = {
        "dagster/row_count": len(df),
        "avg_at_k": md_table(show[["objective", "lr", "batch_size", "benchmark", "avg_at_k", "ci", "pass_at_k",
                                   "n_problems", "no_answer_rate", "truncation_rate"]].round(4), max_rows=60),
        "per_problem": dg.MetadataValue.path(str(per_problem_path)),
        "wall_time_s": round(time.monotonic() - started, 1),
        **stats,
    }
    for _, r in macro.iterrows():
        meta[f"macro_avg_at_k/{r['objective']}"] = dg.MetadataValue.float(float(r["avg_at_k"]))
    return meta


def build_eval_asset(variant: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=f"{variant}_eval",
        partitions_def=model_family,
        group_name=_group(variant),
        code_version="1",
        kinds={"parquet"},
        **ACCELERATOR,
        ins={"checkpoints": dg.AssetIn(f"{variant}_checkpoints")},
        description=f"Benchmark accuracy of every {variant} checkpoint: k samples per item at the study's temperature "
        "and max tokens, verified; Avg@k with a bootstrap 95% CI over problems, pass@k, answer-extraction failure "
        "and truncation rates, per benchmark and macro-averaged. Per-problem accuracies are kept beside the table.",
    )
    def _asset(context: dg.AssetExecutionContext, study: StudyResource, checkpoints: pd.DataFrame,
               benchmarks: pd.DataFrame) -> dg.Output[pd.DataFrame]:
        s = study.load()
        name = context.partition_key
        started = time.monotonic()
        tables, problems, stats = [], [], {"cache_hits": 0, "generated": 0}
        for _, ck in checkpoints.iterrows():
            point = point_name(ck["objective"], ck["lr"], ck["batch_size"], s.training)
            # The canonical location in this store (the table's absolute path is for people; a store may move).
            path = artifact_dir(study.store, f"{variant}_checkpoints", name) / point
            if not (path / "config.json").is_file():
                raise dg.Failure(description=f"{name}/{variant}: checkpoint folder {path} is missing; "
                                 f"re-materialize {variant}_checkpoints for partition {name}")
            table, probs, st = evaluate(context, study, s, name, str(path), benchmarks, f"{variant}/{point}")
            ident = {"model_family": name, "objective": ck["objective"], "lr": ck["lr"], "batch_size": ck["batch_size"]}
            tables.append(table.assign(**ident))
            problems.append(probs.assign(**ident))
            stats = {k: stats[k] + st[k] for k in stats}
        return _publish_eval(context, study, tables, problems, stats, started)

    return _asset


eval_assets = [build_eval_asset(v) for v in ALL_VARIANTS]


@dg.asset(
    partitions_def=model_family,
    group_name="students",
    code_version="1",
    kinds={"parquet"},
    **ACCELERATOR,
    description="Benchmark accuracy of the family's base model before any fine-tuning (objective 'none'): the "
    "reference line every variant's checkpoints are compared with. Same protocol as the variants' eval.",
)
def base_eval(context: dg.AssetExecutionContext, study: StudyResource, base_model: dict,
              benchmarks: pd.DataFrame) -> dg.Output[pd.DataFrame]:
    s = study.load()
    name = context.partition_key
    started = time.monotonic()
    table, probs, stats = evaluate(context, study, s, name, study.model_path(base_model), benchmarks, "base")
    ident = {"model_family": name, "objective": "none", "lr": float("nan"), "batch_size": 0}
    return _publish_eval(context, study, [table.assign(**ident)], [probs.assign(**ident)], stats, started)
