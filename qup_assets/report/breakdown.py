"""The paradox broken down: by model size, by problem difficulty, and for selected data (beyond the paper).

Every number comes from the same paired bootstrap over benchmark items as the main analysis; every sentence is
generated from its interval. Families of one lineage are compared on the same benchmark items, so a change of
a gap with size is judged with draws paired across the two models.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from qup_assets import variants
from qup_assets.common import format_params
from qup_assets.report.analysis import FamilyData, correlations, gap_sentence, paired_differences, paradox_state


def study_pairs() -> list[tuple[str, str]]:
    """Every (variant, versus) the report compares: Style-Aligned against Oracle-Refined and SLM-RFT, SLM-RFT
    against each Oracle variant (the paradox by size), each selected variant against every other variant."""
    oracle = [v.name for v in variants.sources("oracle")]
    pairs = [("style_aligned", "oracle_refined"), ("style_aligned", "native")]
    pairs += [("native", v) for v in oracle] + [("native", "oracle_synthesized")]
    pairs += [(s.name, v) for s in variants.sources("selected") for v in variants.names() if v != s.name]
    names = set(variants.names())
    return [p for p in dict.fromkeys(pairs) if p[0] in names and p[1] in names]


def size_pairs() -> list[tuple[str, str]]:
    """The gaps the size plot follows: SLM-RFT minus each Oracle variant, Style-Aligned minus Oracle-Refined."""
    return [("native", v.name) for v in variants.sources("oracle")] + [("style_aligned", "oracle_refined")]


# ---------------------------------------------------------------- sizes


def size_table(diffs: pd.DataFrame, sizes: dict[str, tuple[str, float | None]]) -> pd.DataFrame:
    """The size pairs' differences per family with its lineage and parameter count (the size plot's data)."""
    if diffs.empty or not sizes:
        return pd.DataFrame()
    keep = diffs.merge(pd.DataFrame(size_pairs(), columns=["variant", "versus"]), on=["variant", "versus"])
    meta = pd.DataFrame([(f, lin, p) for f, (lin, p) in sizes.items()], columns=["model_family", "lineage", "parameters"])
    return keep.merge(meta, on="model_family").sort_values(["lineage", "parameters", "variant", "versus"])


def size_sentences(fams: list[FamilyData], sizes: dict[str, tuple[str, float | None]], objectives: list[str],
                   samples: int, seed: int) -> list[str]:
    """Per lineage with two or more sizes: each size pair's gap at its smallest and largest model, and the
    change between them with a bootstrap interval over the benchmark items both models answered."""
    by_name = {f.family: f for f in fams}
    out = []
    lineages: dict[str, list[str]] = {}
    for f, (lin, p) in sizes.items():
        if f in by_name and p:
            lineages.setdefault(lin, []).append(f)
    for lin, members in sorted(lineages.items()):
        if len(members) < 2:
            continue
        ordered = sorted(members, key=lambda f: sizes[f][1])
        small, large = ordered[0], ordered[-1]
        fs, fl = by_name[small], by_name[large]
        if len(fs.items) != len(fl.items) or (fs.items != fl.items).any():
            out.append(f"- {lin}: {small} and {large} were evaluated on different benchmark items; no paired comparison.")
            continue
        rng = np.random.default_rng(seed)
        draws = [fs.resample_items(rng) for _ in range(samples)]
        at = f"{format_params(sizes[small][1])} ({small}) and {format_params(sizes[large][1])} ({large})"
        for o in objectives:
            for a, b in size_pairs():
                if a not in fs.variants or b not in fs.variants:
                    continue
                ia, ib = fs.variants.index(a), fs.variants.index(b)

                def gap(f, d=None):
                    m = f.macro(f.accuracy[o], d)
                    return m[ia] - m[ib]

                g_s, g_l = gap(fs), gap(fl)
                change = np.array([gap(fl, d) - gap(fs, d) for d in draws])
                lo, hi = np.quantile(change, [0.025, 0.975])
                says = ("rises" if lo > 0 else "falls" if hi < 0 else "shows no change beyond the noise")
                out.append(f"- {lin}, {o.upper()}: {variants.label(a)} minus {variants.label(b)} is "
                           f"{100 * g_s:+.1f} points at {format_params(sizes[small][1])} and {100 * g_l:+.1f} at "
                           f"{format_params(sizes[large][1])} parameters: from the smaller to the larger model it "
                           f"{says} ({100 * (g_l - g_s):+.1f} points, 95% CI [{100 * lo:+.1f}, {100 * hi:+.1f}]; "
                           f"{at}).")
    return out


# ---------------------------------------------------------------- selected data


def best_by_reward(fams: list[FamilyData], exclude: tuple[str, ...]) -> dict[str, str]:
    """Per family, the variant whose traces the reward models score highest (selected variants left out): what
    choosing data by reward would train on."""
    out = {}
    for f in fams:
        means = {v: float(np.nanmean(f.rewards[i])) for i, v in enumerate(f.variants) if v not in exclude}
        if means:
            out[f.family] = max(means, key=means.get)
    return out


def selection_sentences(diffs: pd.DataFrame, fams: list[FamilyData]) -> list[str]:
    """Each selected variant against SLM-RFT, Oracle-Refined, Style-Aligned and the family's highest-reward
    variant (choosing by reward), from the paired differences."""
    selected = [v.name for v in variants.sources("selected")]
    if diffs.empty or not selected:
        return []
    best = best_by_reward(fams, tuple(selected))
    out = []
    for s in selected:
        rows = diffs[diffs["variant"] == s]
        for _, d in rows.iterrows():
            if d["versus"] in ("native", "oracle_refined", "style_aligned"):
                out.append(gap_sentence(d, s))
            if d["versus"] == best.get(d["model_family"]):
                out.append(gap_sentence(d, s)[:-1] + ": the family's highest-reward variant, i.e. choosing by reward.")
    return list(dict.fromkeys(out))


# ---------------------------------------------------------------- difficulty


def item_difficulty(fams: list[FamilyData], benchmarks: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each family's benchmark items labelled by difficulty: "N steps" where the benchmark knows the step
    count (the synthetic world), else the benchmark's name (its source)."""
    steps = {(b, p): n for b, p, n in zip(benchmarks["benchmark"], benchmarks["problem_id"], benchmarks["n_steps"])}
    out = {}
    for f in fams:
        labels = []
        for b, p in zip(f.benchmarks, f.items):
            n = steps.get((b, p))
            labels.append((f"{int(n)} step" + ("s" if int(n) != 1 else "")) if n is not None and not pd.isna(n)
                          else str(b))
        out[f.family] = np.array(labels)
    return out


def by_difficulty(fams: list[FamilyData], benchmarks: pd.DataFrame, objectives: list[str], samples: int,
                  seed: int) -> tuple[pd.DataFrame, list[str]]:
    """Per difficulty bucket of the benchmark items (pooled over families, all objectives): the rank correlations
    of reward and of PPL with accuracy and what their intervals support, and SLM-RFT minus Oracle-Refined per
    family; the training data stay the whole common set."""
    labels = item_difficulty(fams, benchmarks)
    buckets = sorted({b for lab in labels.values() for b in lab}, key=lambda b: (not b[0].isdigit(), len(b), b))
    rows, lines = [], []
    objs = "all" if len(objectives) > 1 else objectives[0]
    for bucket in buckets:
        sub = [f.restrict(labels[f.family] == bucket) for f in fams if (labels[f.family] == bucket).sum() >= 5]
        if not sub:
            continue
        corrs = {(c.scope, c.objective, c.x): c for c in correlations(sub, objectives, samples, seed)
                 if c.method == "spearman"}
        scope = "pooled" if len(sub) > 1 else sub[0].family
        r, p = corrs[(scope, objs, "reward")], corrs[(scope, objs, "ppl")]
        state = paradox_state(r, p)
        diffs = paired_differences(sub, objectives, samples, seed, pairs=(("native", "oracle_refined"),))
        diffs = diffs[diffs["versus"] == "oracle_refined"] if len(diffs) else diffs
        rows += [{"difficulty": bucket, "items": int(max(len(f.items) for f in sub)), "families": len(sub), "scope": scope,
                  "rho_reward": r.rho, "rho_reward_ci": f"[{r.ci_low:+.2f}, {r.ci_high:+.2f}]",
                  "rho_ppl": p.rho, "rho_ppl_ci": f"[{p.ci_low:+.2f}, {p.ci_high:+.2f}]", "paradox": state}]
        gaps = "; ".join(f"{d['model_family']} {d['objective'].upper()} {100 * d['difference']:+.1f} "
                         f"[{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]" for _, d in diffs.iterrows())
        lines.append(f"- {bucket} ({rows[-1]['items']} items x {len(sub)} families): the paradox {_STATES[state]} (rho(reward, accuracy) "
                     f"{r.rho:+.2f} {rows[-1]['rho_reward_ci']}, rho(PPL, accuracy) {p.rho:+.2f} "
                     f"{rows[-1]['rho_ppl_ci']}); SLM-RFT minus Oracle-Refined, points: {gaps}.")
    return pd.DataFrame(rows), lines


_STATES = {"strong": "holds in its strong form", "holds": "holds", "absent": "does not hold",
           "inconclusive": "is not decided at this size"}
