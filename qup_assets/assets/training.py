"""Fine-tuning: `{variant}_checkpoints` for every variant of the registry, each family's base model trained on the
variant's traces of its common problem set, one HF model folder per objective and grid point."""

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import dagster as dg
import pandas as pd
import yaml

from qup_assets.assets.inputs import common_traces
from qup_assets.assets.metadata import plot_markdown, table, versioned
from qup_assets.assets.partitions import model_family
from qup_assets.assets.resources import ACCELERATOR, StudyResource
from qup_assets.backends.factory import load_tokenizer
from qup_assets.backends.prompting import render_prompt
from qup_assets.study import Training
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
from qup_assets.training.grid import checkpoint_dir, checkpoints_dir, grid_points, point_name
from qup_assets.training.launch import accelerate_config
from qup_assets.variants import Variant

CHECKPOINT_COLUMNS = [
    "model_family", "objective", "lr", "batch_size", "checkpoint", "examples", "dropped_overlength", "steps",
    "tokens_trained", "train_loss", "eos_rate", "wall_time_s", "loss_curve",
]


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
    import torch

    # each rank its share of this run's threads (the resource set them for the run)
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, torch.get_num_threads() // training.num_processes)))
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


def build_checkpoints_asset(v: Variant) -> dg.AssetsDefinition:
    variant = v.name

    @dg.asset(
        name=f"{variant}_checkpoints",
        partitions_def=model_family,
        group_name=v.group,
        code_version="2",
        kinds={"pytorch"},
        **ACCELERATOR,
        ins={"traces": dg.AssetIn(f"{variant}_traces")},
        description=f"The family's base model fine-tuned on {variant} traces of its common problem set with TRL's "
        "SFTTrainer: one HF model folder per objective (sft = NLL, dft = SFTConfig(loss_type='dft')) and grid point, "
        "loss on the completion only, eos appended, written atomically. Overlength traces are dropped with a count "
        "(or refused), never cut. Column `checkpoint`: the folder, relative to the study's store.",
    )
    def _asset(context: dg.AssetExecutionContext, study: StudyResource, base_model: dict, traces: pd.DataFrame,
               common_problems: pd.DataFrame, problem_pool: pd.DataFrame) -> dg.Output[pd.DataFrame]:
        s = study.load()
        name = context.partition_key
        fam = study.family(s, name)
        tr = s.training
        t = common_traces(traces, common_problems).merge(problem_pool[["problem_id", "problem"]], on="problem_id")
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
        out_root = checkpoints_dir(study.store, variant, name)
        with study.gpus(context, "train", name):
            for objective, lr, batch in grid_points(tr):
                point = point_name(objective, lr, batch, tr)
                out_dir = checkpoint_dir(study.store, variant, name, objective, lr, batch, tr)
                job = FinetuneJob(base_model=base_path, out_dir=str(out_dir), objective=objective,
                                  lr=lr, batch_size=batch, micro_batch_size=tr.micro_batch_size, epochs=tr.epochs,
                                  max_length=tr.max_length, seed=tr.seed,
                                  lora=tr.lora.model_dump() if tr.lora else None,
                                  trust_remote_code=fam.trust_remote_code,
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
                             "checkpoint": str(out_dir.relative_to(study.store)), "examples": res.examples,
                             "dropped_overlength": len(data.dropped),
                             "steps": res.steps, "tokens_trained": res.tokens_trained, "train_loss": res.train_loss,
                             "eos_rate": eos, "wall_time_s": res.wall_time_s, "loss_curve": json.dumps(res.loss_curve)})
        df = pd.DataFrame(rows, columns=CHECKPOINT_COLUMNS)
        # An explicit Output: a Pipes session (the accelerate launcher) requires a typed event stream.
        return versioned(df, metadata={
            "dagster/row_count": len(df),
            "checkpoints": table(df.drop(columns=["model_family", "loss_curve"]), max_rows=20),
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
        }, context=context)

    return _asset


