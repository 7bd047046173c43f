"""Exemplar-level analysis: the paradox trace by trace, not only on average (the paper's own stated limit).

`exemplar_table` joins what the study knows about each trace across variants (rewards per RM, its own PPL and
quartile PPLs under the student, semantic preservation, edit distance to native, the problem's difficulty);
the report reads it for the problems where reward and perplexity disagree most and for the within-variant
correlation of reward and PPL.
"""

from __future__ import annotations

import codecs
import re

import numpy as np
import pandas as pd

from qup_assets import variants
from qup_assets.report.analysis import combined_reward, headline_rewards, spearman

EXEMPLAR_COLUMNS = ["model_family", "problem_id", "variant", "n_steps", "source", "reward", "nll", "n_tokens", "ppl",
                    "ppl_q1", "ppl_q2", "ppl_q3", "ppl_q4", "semantic_preservation", "edit_distance", "completion",
                    "tokens", "token_nll"]


def reward_column(rm: str) -> str:
    """The exemplar table's column of one RM's score ("synthetic-rm" -> reward_synthetic_rm), SQL-friendly."""
    return "reward_" + re.sub(r"[^0-9A-Za-z]+", "_", rm).strip("_").lower()


def exemplar_table(family: str, traces: dict[str, pd.DataFrame], adaptation: dict[str, pd.DataFrame],
                   rewards: dict[str, pd.DataFrame], problems: pd.DataFrame, study=None) -> pd.DataFrame:
    """One row per (variant, common problem) of one family: EXEMPLAR_COLUMNS plus one `reward_<rm>` column per
    RM. `reward` is the report's combined reward (one RM: its score; several: the mean of z-scores of the
    `study`'s headline RMs)."""
    combined = combined_reward(headline_rewards(rewards, study) if study is not None else rewards)
    facts = problems.set_index("problem_id")[["n_steps", "source"]]
    frames = []
    for v in [v for v in variants.names() if v in adaptation]:
        a = adaptation[v][adaptation[v]["model_family"] == family]
        if a.empty:
            continue
        text = traces[v][traces[v]["model_family"] == family].drop_duplicates("problem_id")
        df = a.merge(text[["problem_id", "completion"]], on="problem_id", how="left")
        wide = rewards[v][rewards[v]["model_family"] == family].pivot_table(
            index="problem_id", columns="reward_model", values="score", aggfunc="mean")
        wide.columns = [reward_column(c) for c in wide.columns]
        df = df.merge(wide, left_on="problem_id", right_index=True, how="left")
        c = combined[v][combined[v]["model_family"] == family][["problem_id", "score"]].rename(columns={"score": "reward"})
        df = df.merge(c, on="problem_id", how="left").join(facts, on="problem_id")
        frames.append(df.assign(variant=v))
    if not frames:
        return pd.DataFrame(columns=EXEMPLAR_COLUMNS)
    out = pd.concat(frames, ignore_index=True)
    rm_cols = sorted(c for c in out.columns if c.startswith("reward_"))
    for col in ("tokens", "token_nll"):  # an adaptation table from before token losses were recorded
        if col not in out:
            out[col] = [[] for _ in range(len(out))]
    return out[EXEMPLAR_COLUMNS[:6] + rm_cols + EXEMPLAR_COLUMNS[6:]].reset_index(drop=True)


# ---------------------------------------------------------------- where reward and perplexity disagree


def disagreements(ex: pd.DataFrame, a: str = "native", b: str = "oracle_refined", n: int = 10) -> pd.DataFrame:
    """The `n` problems per family whose trace gained the most reward AND rose the most in PPL from variant `a`
    to `b` (both ranked as percentiles, the smaller of the two decides), with both texts and token losses."""
    rows = []
    for fam, g in ex.groupby("model_family", sort=True):
        x = g[g["variant"] == a].set_index("problem_id")
        y = g[g["variant"] == b].set_index("problem_id")
        ids = x.index.intersection(y.index)
        if ids.empty:
            continue
        d = pd.DataFrame({"reward_gain": y.loc[ids, "reward"] - x.loc[ids, "reward"],
                          "ppl_rise": y.loc[ids, "ppl"] - x.loc[ids, "ppl"]})
        d["both"] = np.minimum(d["reward_gain"].rank(pct=True), d["ppl_rise"].rank(pct=True))
        d = d[(d["reward_gain"] > 0) & (d["ppl_rise"] > 0)].sort_values(["both", "reward_gain"], ascending=False)
        for pid, r in d.head(n).iterrows():
            rows.append({"model_family": fam, "problem_id": pid, "n_steps": x.at[pid, "n_steps"],
                         "reward_gain": r["reward_gain"], "ppl_rise": r["ppl_rise"],
                         f"reward_{a}": x.at[pid, "reward"], f"reward_{b}": y.at[pid, "reward"],
                         f"ppl_{a}": x.at[pid, "ppl"], f"ppl_{b}": y.at[pid, "ppl"],
                         f"text_{a}": x.at[pid, "completion"], f"text_{b}": y.at[pid, "completion"],
                         f"tokens_{a}": list(x.at[pid, "tokens"]), f"token_nll_{a}": list(x.at[pid, "token_nll"]),
                         f"tokens_{b}": list(y.at[pid, "tokens"]), f"token_nll_{b}": list(y.at[pid, "token_nll"])})
    return pd.DataFrame(rows)


def within_variant_correlations(ex: pd.DataFrame, samples: int, seed: int) -> pd.DataFrame:
    """Per family and variant: Spearman rho of per-trace reward and per-trace PPL, with a bootstrap interval over
    traces. Negative: within one variant, the traces the RM likes are the ones the student finds easy."""
    rows = []
    for (fam, v), g in ex.groupby(["model_family", "variant"], sort=False):
        r, p = g["reward"].to_numpy(float), g["ppl"].to_numpy(float)
        ok = ~(np.isnan(r) | np.isnan(p))
        r, p = r[ok], p[ok]
        rng = np.random.default_rng(seed)
        boot = [spearman(r[i], p[i]) for i in (rng.integers(0, len(r), len(r)) for _ in range(samples))] if len(r) else []
        boot = np.array([b for b in boot if not np.isnan(b)])
        lo, hi = np.quantile(boot, [0.025, 0.975]) if len(boot) else (np.nan, np.nan)
        rows.append({"model_family": fam, "variant": v, "rho": spearman(r, p), "ci_low": float(lo),
                     "ci_high": float(hi), "n_traces": int(len(r))})
    return pd.DataFrame(rows, columns=["model_family", "variant", "rho", "ci_low", "ci_high", "n_traces"])


def by_steps(ex: pd.DataFrame) -> pd.DataFrame:
    """Mean reward and token-weighted PPL per family, variant and training problem's step count: does the
    Oracle's data drift away from the student more on harder problems?"""
    if ex["n_steps"].isna().all():
        return pd.DataFrame()
    g = ex.dropna(subset=["n_steps"]).groupby(["model_family", "n_steps", "variant"], sort=True)
    out = g.agg(reward=("reward", "mean"), nll=("nll", "sum"), n_tokens=("n_tokens", "sum"), traces=("reward", "size"))
    out["ppl"] = np.exp(out.pop("nll") / out.pop("n_tokens"))
    out = out.reset_index()
    out["order"] = out["variant"].map({v: i for i, v in enumerate(variants.names())})
    out = out.sort_values(["model_family", "n_steps", "order"]).drop(columns="order")
    return out[["model_family", "n_steps", "variant", "reward", "ppl", "traces"]].reset_index(drop=True)


# ---------------------------------------------------------------- tokens as text


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-to-unicode table, inverted: byte-level BPE tokens (Qwen2, Llama-3, the synthetic students)
    spell bytes as printable characters (Ġ a space, Ċ a newline)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


_BYTES = _byte_decoder()


def readable(tokens: list[str]) -> list[str]:
    """Each token as the text it stands for (byte-level BPE or SentencePiece's ▁). Bytes are decoded across
    tokens, so a character split over two tokens appears on the token that completes it and the pieces join
    to the trace's text."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    out = []
    for t in tokens:
        t = str(t)
        if t and all(ch in _BYTES for ch in t):
            out.append(decoder.decode(bytes(_BYTES[ch] for ch in t)))
        else:
            out.append(decoder.decode(b"", final=True) + t.replace("▁", " "))
    if out:
        out[-1] += decoder.decode(b"", final=True)
    return out
