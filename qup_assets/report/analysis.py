"""The paradox in numbers: the paper's tables, rank correlations with bootstrap intervals, and a verdict.

Every number here is computed from the study's tables; the verdict sentence is generated from the
intervals, never written by hand. Intervals resample problems (the common training set for reward and
perplexity, each benchmark's items for accuracy), paired across variants, so a variant-to-variant
difference is judged against the noise of the same draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from qup_assets import variants

MACRO = "macro"


def paper_table() -> pd.DataFrame:
    """The paper's published numbers per variant (the registry's paper rows), for reference beside the study's."""
    return pd.DataFrame([(v.name, v.paper.name, v.paper.dft_avg_at_16, v.paper.mean_reward, v.paper.ppl)
                         for v in variants.all_variants() if v.paper],
                        columns=["variant", "paper_name", "dft_avg_at_16", "mean_reward", "ppl"])


# ---------------------------------------------------------------- rank correlation (no scipy needed)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), NaN everywhere if any value is NaN: pandas'
    rank in numpy, because the bootstrap calls this tens of thousands of times per report."""
    if np.isnan(x).any():
        return np.full(len(x), np.nan)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.cumsum(counts) - (counts - 1) / 2)[inverse]


def spearman(x, y) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3:
        return float("nan")
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def kendall(x, y) -> float:
    """Kendall's tau-b (ties in either variable handled)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    if n < 3:
        return float("nan")
    i, j = np.triu_indices(n, 1)
    dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    concordant = float((dx * dy).sum())
    denom = math.sqrt(float((dx != 0).sum()) * float((dy != 0).sum()))
    return concordant / denom if denom else float("nan")


# ---------------------------------------------------------------- per-family arrays, aligned by problem


@dataclass
class FamilyData:
    """One family's per-problem numbers, aligned across variants so bootstrap draws are paired."""

    family: str
    variants: list[str]  # the row order of every array below (registry order)
    rewards: np.ndarray  # (variants, common problems): mean over reward models of each score
    nll: np.ndarray  # (variants, common problems)
    tokens: np.ndarray  # (variants, common problems)
    accuracy: dict[str, np.ndarray] = field(default_factory=dict)  # objective -> (variants, benchmark items)
    benchmarks: np.ndarray = field(default_factory=lambda: np.array([]))  # benchmark of each item
    base: np.ndarray | None = None  # the base model's per-item accuracy, same items (None: not evaluated)
    items: np.ndarray = field(default_factory=lambda: np.array([]))  # problem id of each benchmark item

    def macro(self, acc: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
        """Macro Avg@k per variant: mean over benchmarks of each benchmark's mean (optionally resampled)."""
        cols = acc if idx is None else acc[:, idx]
        labels = self.benchmarks if idx is None else self.benchmarks[idx]
        return np.mean([cols[:, labels == b].mean(axis=1) for b in np.unique(self.benchmarks)], axis=0)

    def resample_items(self, rng) -> np.ndarray:
        """One bootstrap draw of benchmark item indices, resampled within each benchmark."""
        return np.concatenate([rng.choice(np.flatnonzero(self.benchmarks == b), size=int((self.benchmarks == b).sum()))
                               for b in np.unique(self.benchmarks)])

    def restrict(self, mask: np.ndarray) -> "FamilyData":
        """The same family on a subset of its benchmark items (a difficulty bucket); training data unchanged."""
        return FamilyData(self.family, self.variants, self.rewards, self.nll, self.tokens,
                          {o: a[:, mask] for o, a in self.accuracy.items()}, self.benchmarks[mask],
                          None if self.base is None else self.base[mask], self.items[mask])


def headline_rewards(rewards: dict[str, pd.DataFrame], study) -> dict[str, pd.DataFrame]:
    """Only the scores of the study's headline RMs: a sensitivity RM (`headline: false`) gets its own verdict,
    never a share of the combined reward."""
    names = {rm.name for rm in study.reward_models if rm.headline}
    return {v: df[df["reward_model"].isin(names)] for v, df in rewards.items()}


def combined_reward(rewards: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """One reward per (family, problem) per variant, for the correlations, Table 2 and the plots. With one
    RM, its raw score. With several, the mean of each RM's z-score (over all of the family's variants and
    problems): RM scales differ (a 72B outcome RM's logits, Skywork's), and a raw mean would let the widest
    scale decide alone. Table 1 keeps every RM's raw mean."""
    frames = [df.assign(variant=v) for v, df in rewards.items() if len(df)]
    if not frames:
        return rewards
    all_ = pd.concat(frames, ignore_index=True)
    if all_["reward_model"].nunique() > 1:
        g = all_.groupby(["model_family", "reward_model"])["score"]
        std = g.transform("std").replace(0.0, 1.0).fillna(1.0)
        all_ = all_.assign(score=(all_["score"] - g.transform("mean")) / std)
    out = all_.groupby(["variant", "model_family", "problem_id"], as_index=False)["score"].mean()
    return {v: out[out["variant"] == v].drop(columns="variant").reset_index(drop=True) for v in rewards}


def at_main_point(df: pd.DataFrame, lr: float, batch_size: int) -> pd.DataFrame:
    """The rows of a training grid's main point: the study's training lr and batch size, or, for a family and
    objective whose grid lacks that point, its first point (lowest lr, then batch size). Every other point
    is a sensitivity result: pooling them would count each benchmark item once per point."""
    keys = ["model_family", "objective"]
    points = df[keys + ["lr", "batch_size"]].drop_duplicates()
    is_main = (points["lr"] == lr) & (points["batch_size"] == batch_size)
    has_main = points.loc[is_main, keys].drop_duplicates()
    rest = points.merge(has_main, on=keys, how="left", indicator=True)
    rest = rest[rest["_merge"] == "left_only"].drop(columns="_merge")
    first = rest.sort_values(["lr", "batch_size"]).groupby(keys, as_index=False).head(1)
    chosen = pd.concat([points[is_main], first], ignore_index=True)
    return df.merge(chosen, on=keys + ["lr", "batch_size"])


def family_data(family: str, rewards: dict[str, pd.DataFrame], adaptation: dict[str, pd.DataFrame],
                per_problem: dict[str, pd.DataFrame], objectives: list[str], lr: float = float("nan"),
                batch_size: int = 0) -> FamilyData | None:
    """Aligned arrays for one family, or None when some variant has no data for it yet. Accuracies are those
    of the training grid's main point (`at_main_point`)."""
    order = [v for v in variants.names() if v in adaptation]
    common = None
    for v in order:
        ids = set(adaptation[v].loc[adaptation[v]["model_family"] == family, "problem_id"])
        common = ids if common is None else common & ids
    if not common:
        return None
    ids = sorted(common)

    def aligned(df: pd.DataFrame, col: str) -> np.ndarray:
        s = df[df["model_family"] == family].groupby("problem_id")[col].mean()
        return s.reindex(ids).to_numpy(dtype=float)

    r = np.stack([aligned(rewards[v], "score") for v in order])
    nll = np.stack([aligned(adaptation[v], "nll") for v in order])
    tok = np.stack([aligned(adaptation[v], "n_tokens") for v in order])
    acc, bench, items = {}, None, None
    for o in objectives:
        rows = []
        for v in order:
            pp = per_problem[v]
            pp = pp[(pp["model_family"] == family) & (pp["objective"] == o)]
            pp = at_main_point(pp, lr, batch_size).sort_values(["benchmark", "problem_id"]) if len(pp) else pp
            if pp.empty:
                return None
            rows.append(pp["accuracy"].to_numpy(dtype=float))
            bench, items = pp["benchmark"].to_numpy(), pp["problem_id"].to_numpy()
        if len({len(x) for x in rows}) != 1:
            return None
        acc[o] = np.stack(rows)
    base = None
    if "base" in per_problem:
        pp = per_problem["base"]
        pp = pp[pp["model_family"] == family].sort_values(["benchmark", "problem_id"])
        if len(pp) == len(bench):
            base = pp["accuracy"].to_numpy(dtype=float)
    return FamilyData(family, order, r, nll, tok, acc, bench, base, items)


# ---------------------------------------------------------------- correlations


@dataclass
class Correlation:
    scope: str  # a family name or "pooled"
    objective: str  # "sft", "dft" or "all"
    x: str  # "reward" or "ppl"
    method: str  # "spearman" or "kendall"
    rho: float
    ci_low: float
    ci_high: float
    n_points: int


def _points(fams: list[FamilyData], objectives: list[str], draw: dict | None, rng=None):
    """(reward, ppl, accuracy) per family x variant x objective, from the full data or one bootstrap draw."""
    rew, ppl, acc = [], [], []
    for f in fams:
        p = f.rewards.shape[1]
        idx_p = rng.integers(0, p, size=p) if draw is not None else slice(None)
        idx_q = None
        if draw is not None:
            idx_q = f.resample_items(rng)
        r = f.rewards[:, idx_p].mean(axis=1)
        pp = np.exp(f.nll[:, idx_p].sum(axis=1) / f.tokens[:, idx_p].sum(axis=1))
        for o in objectives:
            a = f.macro(f.accuracy[o], idx_q)
            rew.extend(r)
            ppl.extend(pp)
            acc.extend(a)
    return np.array(rew), np.array(ppl), np.array(acc)


def correlations(fams: list[FamilyData], objectives: list[str], samples: int, seed: int) -> list[Correlation]:
    """Spearman and Kendall of reward and of PPL with Avg@k, per family and pooled, per objective and all."""
    out = []
    scopes = [(f.family, [f]) for f in fams] + ([("pooled", fams)] if len(fams) > 1 else [])
    for scope, group in scopes:
        for objs in [[o] for o in objectives] + ([objectives] if len(objectives) > 1 else []):
            out += scope_correlations(scope, group, objs, samples, seed)
    return out


def scope_correlations(scope: str, group: list[FamilyData], objs: list[str], samples: int,
                       seed: int) -> list[Correlation]:
    """The four correlations of one scope and objective set. The draws depend on the seed and the arrays'
    shapes only, so another reward on the same families is judged on the very same draws."""
    label = objs[0] if len(objs) == 1 else "all"
    rew, ppl, acc = _points(group, objs, None)
    rng = np.random.default_rng(seed)
    boot = {k: [] for k in ("reward/spearman", "reward/kendall", "ppl/spearman", "ppl/kendall")}
    for _ in range(samples):
        br, bp, ba = _points(group, objs, {}, rng)
        boot["reward/spearman"].append(spearman(br, ba))
        boot["reward/kendall"].append(kendall(br, ba))
        boot["ppl/spearman"].append(spearman(bp, ba))
        boot["ppl/kendall"].append(kendall(bp, ba))
    out = []
    for key, vals in boot.items():
        x, method = key.split("/")
        point = (spearman if method == "spearman" else kendall)(rew if x == "reward" else ppl, acc)
        vals = np.array([v for v in vals if not math.isnan(v)])
        lo, hi = (np.quantile(vals, [0.025, 0.975]) if len(vals) else (float("nan"), float("nan")))
        out.append(Correlation(scope, label, x, method, point, float(lo), float(hi), len(acc)))
    return out


def correlation_table(corrs: list[Correlation]) -> pd.DataFrame:
    return pd.DataFrame([c.__dict__ for c in corrs])


# ---------------------------------------------------------------- does style alignment close the gap?


def paired_differences(fams: list[FamilyData], objectives: list[str], samples: int, seed: int,
                       pairs=(("style_aligned", "oracle_refined"), ("style_aligned", "native"),
                              ("native", "oracle_refined"), ("native", "oracle_synthesized"))) -> pd.DataFrame:
    """Macro Avg@k differences between variants with a paired bootstrap CI over benchmark items."""
    rows = []
    for f in fams:
        rng = np.random.default_rng(seed)
        draws = [f.resample_items(rng) for _ in range(samples)]
        if f.base is not None:  # the base model's macro accuracy, whole and per draw: one for every objective
            base_full = f.macro(f.base[None, :])[0]
            base_boot = np.array([f.macro(f.base[None, :], d)[0] for d in draws])
        for o in objectives:
            acc = f.accuracy[o]
            full = f.macro(acc)
            boot = np.stack([f.macro(acc, d) for d in draws])
            for a, b in pairs:
                if a not in f.variants or b not in f.variants:
                    continue
                ia, ib = f.variants.index(a), f.variants.index(b)
                diff = boot[:, ia] - boot[:, ib]
                rows.append({"model_family": f.family, "objective": o, "variant": a, "versus": b,
                             "difference": float(full[ia] - full[ib]),
                             "ci_low": float(np.quantile(diff, 0.025)), "ci_high": float(np.quantile(diff, 0.975))})
            if f.base is not None and "native" in f.variants:  # does RFT lift the student at all?
                ia = f.variants.index("native")
                diff = boot[:, ia] - base_boot
                rows.append({"model_family": f.family, "objective": o, "variant": "native", "versus": "base",
                             "difference": float(full[ia] - base_full),
                             "ci_low": float(np.quantile(diff, 0.025)), "ci_high": float(np.quantile(diff, 0.975))})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- the verdict, generated


def _fmt_rho(c: Correlation) -> str:
    return f"{c.rho:+.2f} [{c.ci_low:+.2f}, {c.ci_high:+.2f}]"


def paradox_state(r: Correlation, p: Correlation) -> str:
    """What the intervals of rho(reward, accuracy) and rho(PPL, accuracy) support: "strong" (reward predicts
    lower accuracy, perplexity ranks correctly), "holds" (reward does not predict accuracy, perplexity does),
    "absent" (reward predicts higher accuracy) or "inconclusive"."""
    if r.ci_high < 0 and p.ci_high < 0:
        return "strong"
    if r.ci_low <= 0 and p.ci_high < 0:
        return "holds"
    if r.ci_low > 0:
        return "absent"
    return "inconclusive"


def headline(corrs: list[Correlation], objectives: list[str]) -> tuple[str, str] | None:
    """(scope, objective) the verdict is read at: pooled (else the one family), all objectives (else the one)."""
    scopes = sorted({c.scope for c in corrs}, key=lambda s: (s != "pooled", s))
    if not scopes:
        return None
    return scopes[0], "all" if any(c.scope == scopes[0] and c.objective == "all" for c in corrs) else objectives[0]


def verdict(corrs: list[Correlation], objectives: list[str]) -> list[str]:
    """Sentences that state what the intervals support; the headline scope is pooled (else the one family)."""
    head = headline(corrs, objectives)
    if head is None:
        return ["Not enough data for a verdict: no family has rewards, perplexities and accuracies for every variant."]
    scope, obj = head
    by = {(c.scope, c.objective, c.x, c.method): c for c in corrs}
    r, p = by[(scope, obj, "reward", "spearman")], by[(scope, obj, "ppl", "spearman")]

    def reward_says():
        if r.ci_low > 0:
            return "higher reward predicted higher accuracy"
        if r.ci_high < 0:
            return "higher reward predicted LOWER accuracy"
        return "higher reward did not reliably predict higher accuracy"

    def ppl_says():
        if p.ci_high < 0:
            return "lower perplexity under the student predicted higher accuracy"
        if p.ci_low > 0:
            return "lower perplexity predicted LOWER accuracy"
        return "lower perplexity did not reliably predict higher accuracy"

    where = f"{'pooled over families' if scope == 'pooled' else scope}, {'SFT and DFT' if obj == 'all' else obj.upper()}"
    lines = [
        f"In this study ({where}; n = {r.n_points} variant x objective points): {reward_says()} "
        f"(Spearman rho = {_fmt_rho(r)}), and {ppl_says()} (rho = {_fmt_rho(p)}); 95% bootstrap intervals over problems."
    ]
    state = paradox_state(r, p)
    if state == "strong":
        lines.append("The Quality-Utility Paradox holds here in its strong form: the data the reward model scores "
                     "highest trains the student worst, and the student's own perplexity ranks the data correctly.")
    elif state == "holds":
        lines.append("The Quality-Utility Paradox holds here: reward-model quality did not translate into utility, "
                     "while the student's perplexity did.")
    elif state == "absent":
        lines.append("The paradox does not hold here: data with higher reward also trained the student better.")
    else:
        lines.append("The evidence is inconclusive at this study's size: neither reward nor perplexity separates the "
                     "variants beyond the bootstrap noise. Raise benchmark size or evaluation.k to narrow the intervals.")
    for c in corrs:
        if c.scope not in ("pooled", scope) and c.objective == obj and c.method == "spearman":
            lines.append(f"- {c.scope}: rho(reward, accuracy) = {_fmt_rho(c)}" if c.x == "reward"
                         else f"- {c.scope}: rho(PPL, accuracy) = {_fmt_rho(c)}")
    return lines


def gap_sentence(d, variant: str) -> str:
    """One paired difference as a sentence: is `variant` above, below or not distinguishable from d.versus?"""
    sig = "above" if d["ci_low"] > 0 else "below" if d["ci_high"] < 0 else "not distinguishable from"
    return (f"- {d['model_family']} ({d['objective'].upper()}): {variants.label(variant)} is {sig} "
            f"{variants.label(d['versus'])} ({100 * d['difference']:+.1f} points, 95% CI "
            f"[{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]).")


def gap_sentences(diffs: pd.DataFrame, variant: str = "style_aligned") -> list[str]:
    """`variant` against each variant it was paired with, per family and objective."""
    if diffs.empty:
        return []
    rows = diffs[(diffs["variant"] == variant) & (diffs["versus"] != "base")]
    return [gap_sentence(d, variant) for _, d in rows.iterrows()]


def rft_sentences(diffs: pd.DataFrame) -> list[str]:
    """SLM-RFT against the base model: the premise of the paper's baseline, checked rather than assumed."""
    out = []
    for _, d in diffs[(diffs["variant"] == "native") & (diffs["versus"] == "base")].iterrows():
        sig = "lifts" if d["ci_low"] > 0 else "lowers" if d["ci_high"] < 0 else "does not measurably change"
        out.append(f"- {d['model_family']} ({d['objective'].upper()}): fine-tuning on its own verified traces {sig} "
                   f"the base model's accuracy ({100 * d['difference']:+.1f} points, 95% CI "
                   f"[{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]).")
    return out


def paper_correlations() -> pd.DataFrame:
    """The published shape, for reference beside this study's: rank correlations over the paper's variants."""
    paper = paper_table()
    p = paper.dropna(subset=["ppl"])
    return pd.DataFrame([
        {"x": "reward", "spearman": spearman(paper["mean_reward"], paper["dft_avg_at_16"]),
         "kendall": kendall(paper["mean_reward"], paper["dft_avg_at_16"]), "n_points": len(paper)},
        {"x": "ppl", "spearman": spearman(p["ppl"], p["dft_avg_at_16"]),
         "kendall": kendall(p["ppl"], p["dft_avg_at_16"]), "n_points": len(p)},
    ])
