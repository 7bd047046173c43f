"""Does fine-tuning on a student's own verified traces (SLM-RFT) lift it, and what limits the lift?

Reads a materialized study store (base model, native traces and samples, benchmarks), fine-tunes the base
on its native traces under several settings with the study's own TRL path, evaluates each with the study's
evaluation, and prints the lift over the base with a paired bootstrap CI over benchmark items; also how many
distinct correct texts the samples hold per problem (the most traces RFT could keep).

Run (after `make study`):
  .venv/bin/python bench/rft_sweep.py --family tiny-qwen
  .venv/bin/python bench/rft_sweep.py --family tiny-llama --configs '[{"lr": 5e-4, "epochs": 6}]'
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

DEFAULT = [{"lr": 5e-4, "epochs": 2}, {"lr": 5e-4, "epochs": 6}, {"lr": 2e-3, "epochs": 2}, {"lr": 2e-3, "epochs": 6}]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--study", default="data/studies/tiny.yaml")
    ap.add_argument("--store", default=None, help="the study's folder in the store (default data/store/studies/NAME)")
    ap.add_argument("--family", required=True)
    ap.add_argument("--configs", default=json.dumps(DEFAULT), help="JSON list of {lr, epochs, batch_size}")
    args = ap.parse_args()

    import numpy as np
    import pandas as pd

    from qup_assets.backends.factory import load_tokenizer
    from qup_assets.evaluation.evaluate import evaluate_model
    from qup_assets.mathcore.verify import VerifierPool
    from qup_assets.study import load_study
    from qup_assets.training.finetune import FinetuneJob, build_training_set, finetune

    s = load_study(args.study)
    store = Path(args.store or f"data/store/studies/{s.name}")
    fam = s.families[args.family]
    base = str(store / "artifacts/base_model" / args.family / "model")
    tables = store / "tables"
    pool = pd.read_parquet(tables / "problem_pool/_unpartitioned.parquet")
    bench = pd.read_parquet(tables / "benchmarks/_unpartitioned.parquet")
    traces = pd.read_parquet(tables / f"native_traces/{args.family}.parquet").merge(
        pool[["problem_id", "problem"]], on="problem_id")
    samples = pd.read_parquet(tables / f"native_samples/{args.family}.parquet")
    correct = samples[samples["correct"]]
    print(f"{args.family}: {len(traces)} native traces; {len(correct)} correct samples, "
          f"{correct.drop_duplicates(['problem_id', 'completion']).shape[0]} distinct correct texts")
    tok = load_tokenizer(base)
    data = build_training_set(tok, fam.prompt, list(traces["problem_id"]), list(traces["problem"]),
                              list(traces["completion"]), s.training.max_length)
    ev = s.evaluation
    with tempfile.TemporaryDirectory() as tmp, VerifierPool(workers=1) as verifier:
        cache = Path(tmp) / "cache"
        base_table, base_pp, _ = evaluate_model(args.family, fam, base, bench, ev, cache, verifier, log=lambda m: None)
        macro = base_table[base_table["benchmark"] == "macro"].iloc[0]
        print(f"base: macro Avg@{ev.k} {macro['avg_at_k']:.3f} [{macro['ci_low']:.3f}, {macro['ci_high']:.3f}]")
        for i, c in enumerate(json.loads(args.configs)):
            job = FinetuneJob(base_model=base, out_dir=str(Path(tmp) / f"ft{i}"), objective=c.get("objective", "sft"),
                              lr=c["lr"], batch_size=c.get("batch_size", s.training.batch_size),
                              micro_batch_size=s.training.micro_batch_size, epochs=c["epochs"],
                              max_length=s.training.max_length, seed=0)
            started = time.monotonic()
            res = finetune(job, data.records, log=lambda m: None)
            _, pp, _ = evaluate_model(args.family, fam, res.path, bench, ev, cache, verifier, log=lambda m: None)
            m = pp.merge(base_pp, on=["benchmark", "problem_id"], suffixes=("", "_base"))
            d = (m["accuracy"] - m["accuracy_base"]).to_numpy()
            boots = d[np.random.default_rng(0).integers(0, len(d), (1000, len(d)))].mean(1)
            lo, hi = np.percentile(boots, [2.5, 97.5])
            print(f"{json.dumps(c)}: {res.steps} steps, train loss {res.train_loss:.3f}, "
                  f"lift {d.mean():+.3f} [{lo:+.3f}, {hi:+.3f}] ({time.monotonic() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
