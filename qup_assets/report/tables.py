"""The paper's Table 1 (quality vs utility) and Table 2 (mechanism), per family, as numeric DataFrames."""

from __future__ import annotations

import numpy as np
import pandas as pd

from qup_assets import variants
from qup_assets.evaluation.metrics import bootstrap_ci
from qup_assets.report.analysis import MACRO, at_main_point

QUARTILES = ["ppl_q1", "ppl_q2", "ppl_q3", "ppl_q4"]


def headline_eval(evals: pd.DataFrame, lr: float, batch_size: int) -> pd.DataFrame:
    """Macro rows at the study's main grid point (the lr and batch size of the training section, if trained)."""
    return at_main_point(evals[evals["benchmark"] == MACRO], lr, batch_size)


def table1(rewards: dict[str, pd.DataFrame], evals: dict[str, pd.DataFrame], base_eval: pd.DataFrame,
           objectives: list[str], lr: float, batch_size: int, samples: int, seed: int) -> pd.DataFrame:
    """variant | mean reward per RM (CI over problems) | Avg@k per objective (CI), per family, base row first."""
    rows = []
    families = sorted(set(base_eval["model_family"]) | {f for e in evals.values() for f in e["model_family"]})
    for fam in families:
        b = base_eval[(base_eval["model_family"] == fam) & (base_eval["benchmark"] == MACRO)]
        row = {"model_family": fam, "variant": "base"}
        for o in objectives:
            if len(b):
                row.update({f"avg_at_k_{o}": b["avg_at_k"].iloc[0], f"ci_low_{o}": b["ci_low"].iloc[0],
                            f"ci_high_{o}": b["ci_high"].iloc[0]})
        rows.append(row)
        for v in (v for v in variants.names() if v in rewards):
            row = {"model_family": fam, "variant": v}
            r = rewards[v][rewards[v]["model_family"] == fam]
            for rm, g in r.groupby("reward_model", sort=True):
                lo, hi = bootstrap_ci(g["score"].to_numpy(), samples, seed)
                row.update({f"reward_{rm}": float(g["score"].mean()), f"reward_{rm}_ci_low": lo,
                            f"reward_{rm}_ci_high": hi})
            e = headline_eval(evals[v][evals[v]["model_family"] == fam], lr, batch_size)
            for o in objectives:
                eo = e[e["objective"] == o]
                if len(eo):
                    row.update({f"avg_at_k_{o}": eo["avg_at_k"].iloc[0], f"ci_low_{o}": eo["ci_low"].iloc[0],
                                f"ci_high_{o}": eo["ci_high"].iloc[0]})
            rows.append(row)
    return pd.DataFrame(rows)


def _token_weighted_log_mean(df: pd.DataFrame, col: str) -> float:
    """Quartile PPL over a dataset: each trace's quartile holds ~n_tokens/4 tokens, so weight log PPL by tokens."""
    w = df["n_tokens"].to_numpy(dtype=float)
    return float(np.exp(np.average(np.log(df[col].to_numpy(dtype=float)), weights=w))) if w.sum() else float("nan")


def table2(adaptation: dict[str, pd.DataFrame], rewards: dict[str, pd.DataFrame], evals: dict[str, pd.DataFrame],
           objectives: list[str], lr: float, batch_size: int) -> pd.DataFrame:
    """variant | global PPL | Q1..Q4 PPL | reward | semantic preservation | Avg@k, per family."""
    rows = []
    families = sorted({f for a in adaptation.values() for f in a["model_family"]})
    for fam in families:
        for v in (v for v in variants.names() if v in adaptation):
            a = adaptation[v][adaptation[v]["model_family"] == fam]
            if a.empty:
                continue
            row = {"model_family": fam, "variant": v,
                   "global_ppl": float(np.exp(a["nll"].sum() / a["n_tokens"].sum())),
                   **{q: _token_weighted_log_mean(a, q) for q in QUARTILES},
                   "reward": float(rewards[v].loc[rewards[v]["model_family"] == fam, "score"].mean()),
                   "semantic_preservation": float(a["semantic_preservation"].mean()),
                   "edit_distance": float(a["edit_distance"].mean()),
                   "traces": len(a)}
            e = headline_eval(evals[v][evals[v]["model_family"] == fam], lr, batch_size)
            for o in objectives:
                eo = e[e["objective"] == o]
                row[f"avg_at_k_{o}"] = float(eo["avg_at_k"].iloc[0]) if len(eo) else float("nan")
            rows.append(row)
    return pd.DataFrame(rows)


def grid_table(evals: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Macro Avg@k at every training grid point, per family, variant and objective: how much the headline
    depends on lr and batch size. Empty when the study trains one point."""
    cols = ["model_family", "variant", "objective", "lr", "batch_size", "avg_at_k", "ci_low", "ci_high"]
    frames = [e[e["benchmark"] == MACRO].assign(variant=v)[cols] for v, e in evals.items() if len(e)]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
    if df.empty or df.groupby(["model_family", "variant", "objective"]).size().max() <= 1:
        return df.iloc[0:0]
    order = {v: i for i, v in enumerate(variants.names())}
    rank = df["variant"].map(order).fillna(len(order))  # the report's variant order, others after
    return (df.assign(_rank=rank).sort_values(["model_family", "objective", "_rank", "lr", "batch_size"])
            .drop(columns="_rank").reset_index(drop=True))


def reward_distribution(rewards: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Each RM's score distribution per family and variant (raw scores): where a variant sits, and how spread."""
    rows = []
    for v, df in rewards.items():
        for (fam, rm), g in df.groupby(["model_family", "reward_model"], sort=True):
            q = g["score"].quantile([0.1, 0.5, 0.9])
            rows.append({"model_family": fam, "reward_model": rm, "variant": v, "n": len(g),
                         "mean": g["score"].mean(), "sd": g["score"].std(), "q10": q[0.1], "median": q[0.5],
                         "q90": q[0.9]})
    return pd.DataFrame(rows, columns=["model_family", "reward_model", "variant", "n", "mean", "sd", "q10", "median",
                                       "q90"])
