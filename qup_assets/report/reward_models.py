"""Does the verdict depend on the reward model? The headline reads one combined reward (`combined_reward`);
a learned outcome RM and a process RM may disagree, and their average would hide it. So each RM alone gets its
own rho(reward, accuracy) and paradox state, at the headline's scope and objective, on the same bootstrap draws
(same seed, same shapes), beside the headline's rho(PPL, accuracy), which no RM changes."""

from __future__ import annotations

import pandas as pd

from qup_assets.report.analysis import Correlation, FamilyData, headline, paradox_state, scope_correlations

COLUMNS = ["reward_model", "state", "rho", "ci_low", "ci_high", "n_points", "scope", "objective"]


def by_reward_model(rewards: dict[str, pd.DataFrame]) -> dict[str, dict[str, pd.DataFrame]]:
    """Each RM's own raw scores per variant (alone, an RM needs no z-score), RMs sorted by name."""
    names = sorted({rm for df in rewards.values() for rm in df["reward_model"].unique()})
    return {rm: {v: df[df["reward_model"] == rm] for v, df in rewards.items()} for rm in names}


def verdict_by_reward_model(fams_by_rm: dict[str, list[FamilyData]], corrs: list[Correlation],
                            objectives: list[str], samples: int, seed: int) -> pd.DataFrame:
    """One row per RM (COLUMNS): its Spearman rho(reward, accuracy) with the interval, and the paradox state it
    gives with the headline's rho(PPL, accuracy). With one RM the headline is its own, not computed twice."""
    head = headline(corrs, objectives)
    if head is None:
        return pd.DataFrame(columns=COLUMNS)
    scope, obj = head
    by = {(c.scope, c.objective, c.x, c.method): c for c in corrs}
    p = by[(scope, obj, "ppl", "spearman")]
    rows = []
    for rm, fams in fams_by_rm.items():
        group = fams if scope == "pooled" else [f for f in fams if f.family == scope]
        if len(fams_by_rm) == 1:
            r = by[(scope, obj, "reward", "spearman")]
        elif group:
            r = next(c for c in scope_correlations(scope, group, objectives if obj == "all" else [obj], samples, seed)
                     if c.x == "reward" and c.method == "spearman")
        else:
            continue
        rows.append([rm, paradox_state(r, p), r.rho, r.ci_low, r.ci_high, r.n_points, scope, obj])
    return pd.DataFrame(rows, columns=COLUMNS)


def robustness_sentence(table: pd.DataFrame) -> str:
    """One sentence: is the verdict the same under every RM, and if not, which RMs give which state."""
    states = dict(zip(table["reward_model"], table["state"]))
    if len(states) == 1:
        (rm, state), = states.items()
        return f"One reward model ({rm}): {state}; there is no other reward model to check the verdict against."
    if len(set(states.values())) == 1:
        return f"The verdict is the same under each of the {len(states)} reward models: {table['state'].iloc[0]}."
    groups: dict[str, list[str]] = {}
    for rm, state in states.items():
        groups.setdefault(state, []).append(rm)
    return "The verdict depends on the reward model: " + "; ".join(
        f"{state} under {', '.join(rms)}" for state, rms in groups.items()) + "."


def reward_model_lines(table: pd.DataFrame) -> list[str]:
    """The robustness sentence, then one line per RM: its state and rho(reward, accuracy) with the interval."""
    if table.empty:
        return []
    return [robustness_sentence(table)] + [
        f"- {r.reward_model}: {r.state} (rho(reward, accuracy) = {r.rho:+.2f} [{r.ci_low:+.2f}, {r.ci_high:+.2f}])"
        for r in table.itertuples()]


STATE_WORDS = {"strong": "holds in its strong form", "holds": "holds", "absent": "does not hold",
               "inconclusive": "is inconclusive"}


def one_line(corrs: list[Correlation], objectives: list[str], table: pd.DataFrame) -> str:
    """The study's finding in one line, from the same intervals as the verdict: the headline state with both rank
    correlations, then the state under each RM alone when there are several (what the UI shows at a glance)."""
    head = headline(corrs, objectives)
    if head is None:
        return "No verdict yet: no family has rewards, perplexities and accuracies for every variant."
    scope, obj = head
    by = {(c.scope, c.objective, c.x, c.method): c for c in corrs}
    r, p = by[(scope, obj, "reward", "spearman")], by[(scope, obj, "ppl", "spearman")]
    where = f"{'pooled over families' if scope == 'pooled' else scope}, {'SFT and DFT' if obj == 'all' else obj.upper()}"
    line = (f"The paradox {STATE_WORDS[paradox_state(r, p)]} ({where}): rho(reward, accuracy) {r.rho:+.2f} "
            f"[{r.ci_low:+.2f}, {r.ci_high:+.2f}], rho(PPL, accuracy) {p.rho:+.2f} [{p.ci_low:+.2f}, {p.ci_high:+.2f}]")
    if len(table) > 1:
        groups: dict[str, list[str]] = {}
        for rm, state in zip(table["reward_model"], table["state"]):
            groups.setdefault(state, []).append(rm)
        line += "; under each RM alone: " + "; ".join(f"{s} under {', '.join(rms)}" for s, rms in groups.items())
    return line + "."
