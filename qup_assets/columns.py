"""What every column of every table asset means: the one place column descriptions live.

The Dagster layer's `column_schema` (assets/metadata.py) asks `describe` for every table it publishes (the
catalog's `dagster/column_schema`, and the typed tables in an asset's metadata), so each column explains itself
in the UI. The domain modules that make the columns (their `*_COLUMNS` lists) say nothing about the UI.

A description is found, most specific first, in
1. OVERRIDES[(kind, column)]: the few names that mean something else in one kind of table (an interval of Avg@k
   in `eval`, of an AUC in `rm_diagnostics`);
2. COLUMNS[column]: what the name means in every table that has it;
3. PATTERNS: generated names (`reward_<rm>` in exemplars, `ppl_q1`..`ppl_q4`).

A table's kind is its asset name less a variant (or `base`) prefix: native_eval and base_eval are `eval`,
native_traces and oracle_refined_traces are `traces`; the other assets (problem_pool, native_samples,
common_problems, rm_diagnostics, exemplars...) are their own kind. No caller has to say it: `table_kind` tells it
from the columns (each kind has columns no other kind has: KIND_MARKERS), so `versioned(df)` describes any table
without knowing its asset name, and so does a UI table that shows a slice of one (the eval's avg_at_k table).
Plain Python, no Dagster: qup_assets_tests/test_columns.py checks every published column has a description.
"""

from __future__ import annotations

import re
from typing import Iterable

from qup_assets import variants
from qup_assets.report.build import KINDS as VARIANT_KINDS  # traces, rewards, adaptation, checkpoints, eval, ...

# (kind, columns only that kind's tables have), first match wins: exemplars before adaptation (it carries the
# adaptation columns plus `variant`), benchmarks before problem_pool.
KIND_MARKERS: list[tuple[str, frozenset[str]]] = [
    ("eval", frozenset({"avg_at_k"})),
    ("per_problem", frozenset({"any_correct"})),
    ("rm_diagnostics", frozenset({"p_correct_over_wrong"})),
    ("checkpoints", frozenset({"checkpoint"})),
    ("common_problems", frozenset({"retried_variants"})),
    ("native_samples", frozenset({"finish_reason"})),
    ("exemplars", frozenset({"variant"})),
    ("adaptation", frozenset({"token_nll"})),
    ("rewards", frozenset({"reward_model", "score"})),
    ("traces", frozenset({"prompt", "completion"})),
    ("benchmarks", frozenset({"benchmark", "problem"})),
    ("problem_pool", frozenset({"problem"})),
]

_CI = ("end of the 95% percentile bootstrap interval of avg_at_k, resampling benchmark items (evaluation."
       "bootstrap_samples draws; macro row: items resampled within each benchmark), in [0, 1]")
_DIAG_CI = ("end of the 95% percentile bootstrap interval of p_correct_over_wrong, resampling the correct and the "
            "wrong samples independently (evaluation.bootstrap_samples draws), in [0, 1]")
_SCORED_TOKENS = "Completion tokens scored under the base model's tokenizer (no eos added): nll's and ppl's count."

COLUMNS: dict[str, str] = {
    # ---- identity, shared by most tables
    "model_family": "The study family (student model) the row belongs to; the asset's partition key.",
    "problem_id": "Stable problem id: 'p-' + the first 12 hex digits of the SHA-1 of the problem text (lower-cased, "
                  "whitespace collapsed); the same problem has the same id in every table and source.",
    "variant": "The training-data variant (variants.py REGISTRY name: native, oracle_refined, ...).",
    # ---- problems (problem_pool, benchmarks; n_steps and source also in exemplars)
    "benchmark": "Benchmark set name (the study file's benchmarks[].name); in eval tables also 'macro': the "
                 "unweighted mean over the benchmarks.",
    "problem": "The problem statement, cleaned text, as the student is prompted with it.",
    "answer": "The gold answer, normalized (the source's answer field, else the last \\boxed{} of its reference "
              "solution); verified against itself before the problem is kept.",
    "reference_solution": "The source's own worked solution (the `reference` variant's text); null when the source "
                          "has none.",
    "program": "The synthetic world's program behind the problem (JSON: its steps); null for HF and local sources.",
    "n_steps": "Reasoning steps of the problem's synthetic program (its difficulty); null for HF and local sources.",
    "source": "Where the problem came from: the problem source's label (synthetic(seed=...), hf:name/config[split] "
              "or local:path).",
    # ---- sampling (native_samples, native_traces)
    "sample_idx": "Index of the sample among the problem's sampling.n draws from the base model (0-based).",
    "completion": "The solution text: the model's (or writer's) answer turn after the prompt.",
    "extracted_answer": "The final answer the verifier read from the completion (\\boxed{}, 'the answer is' ...); "
                        "null when none was found.",
    "verdict": "The verifier's verdict on the completion: correct, wrong, no_answer, timeout or rejected.",
    "correct": "True when the completion's final answer verifies against the gold answer (math-verify, hardened); a "
               "trace table keeps a writer's failed rewrites as False rows with their reason.",
    "n_tokens": "Tokens the model generated for the completion (its own tokenizer; before trace cleaning).",
    "finish_reason": "Why generation stopped: stop (eos or a stop string), length (hit sampling.max_tokens) or "
                     "prompt_too_long (refused by the server).",
    "prompt": "The rendered prompt (the family's prompt template through its chat template) the trace follows; "
              "what training, scoring and perplexity condition on.",
    # ---- variant traces (VARIANT_COLUMNS, SELECTED_COLUMNS)
    "oracle": "Who wrote the trace: the Oracle and its version (symbolic-v3:..., llm:<model>:prompts-<v>), "
              "'dataset' for reference solutions, or the selection rule for a selected variant.",
    "attempts": "Writer calls spent on the trace (LLM Oracle retries included); 0 when there was nothing to rewrite.",
    "reason": "The writer's outcome: how it succeeded (verified, polished, solved, repaired...) or why it failed "
              "(e.g. failed after 3 attempts (answer wrong)).",
    "repaired_steps": "Steps of the native trace with a wrong value that the symbolic Oracle corrected (0 otherwise).",
    "semantic_preservation": "Share of the native trace's information atoms (the quantities its steps establish) "
                             "that this trace still establishes, in [0, 1]; 1.0 for native; null for a failed "
                             "rewrite.",
    "semantic_judge": "The optional LLM judge's score of how much native reasoning the trace keeps (0-10 scaled "
                      "to [0, 1]); null when oracle.semantic_judge is off or its reply had no score.",
    "edit_distance": "Character Levenshtein distance to the native trace divided by the longer text's length, in "
                     "[0, 1]: 0 identical, 1 nothing in common; 0.0 for native.",
    "n_chars": "Characters in the completion; null for a failed rewrite.",
    "selected_from": "Where the chosen trace came from: 'native', 'student sample <i>' (another verified native "
                     "sample) or the Oracle variant whose trace it is.",
    "candidates": "Distinct verified candidate texts the selection compared for the problem.",
    "nll_per_token": "Mean negative log-likelihood per completion token (nats) of the chosen trace under the "
                     "family's base model.",
    "native_nll_per_token": "Mean negative log-likelihood per completion token (nats) of the native trace under "
                            "the family's base model, for comparison.",
    # ---- common_problems
    "common": "True when every variant has a verified trace for the problem: the family's common set, which every "
              "score, training run and evaluation uses.",
    "retried_variants": "Comma-separated variants whose writer needed more than one attempt for the problem.",
    # ---- rewards
    "reward_model": "The study's reward model (reward_models[].name) that gave the score.",
    "score": "The reward model's score of the (problem, trace) pair, on that RM's own scale (a classifier's logit; "
             "a process RM's lowest step probability).",
    # ---- rm_diagnostics
    "n_correct": "Correct native samples the RM scored (up to evaluation.diagnostic_samples, one per problem first).",
    "n_wrong": "Verified-wrong native samples that stopped normally the RM scored (up to evaluation."
               "diagnostic_samples, one per problem first).",
    "p_correct_over_wrong": "ROC AUC: P(a correct native sample outscores a wrong one), ties counted half, in [0, 1]; "
                            "0.5 is chance, below 0.6 the RM's rewards say little about correctness.",
    "mean_correct": "Mean score of the correct samples (the RM's scale).",
    "mean_wrong": "Mean score of the wrong samples (the RM's scale).",
    "sd_correct": "Sample standard deviation of the correct samples' scores (the RM's scale).",
    "sd_wrong": "Sample standard deviation of the wrong samples' scores (the RM's scale).",
    "warning": "Why this RM's scores say little about correctness (not measurable, or AUC below 0.6); empty if none.",
    # ---- adaptation (exemplars too)
    "nll": "Total negative log-likelihood (nats) of the completion's tokens given the prompt under the family's "
           "base model (before fine-tuning).",
    "ppl": "Perplexity of the completion under the base model: exp(nll / n_tokens).",
    "tokens": "The completion's tokens as the base model's tokenizer spells them, in order.",
    "token_nll": "Each completion token's negative log-likelihood (nats) under the base model, aligned with tokens.",
    # ---- exemplars
    "reward": "The report's combined reward: the headline RM's score, or with several headline RMs the mean of "
              "their z-scores (per family and RM, over every variant and problem).",
    # ---- checkpoints (objective, lr, batch_size also in eval and per_problem)
    "objective": "Fine-tuning objective: sft (token NLL), dft (TRL's loss_type='dft'), or 'none' for the base model.",
    "lr": "Learning rate of the fine-tuning grid point; NaN for the base model.",
    "batch_size": "Effective batch size (sequences per optimizer step) of the grid point; 0 for the base model.",
    "checkpoint": "The fine-tuned HF model folder, relative to the study's store.",
    "examples": "Training traces used (the common set's traces less those dropped as overlength).",
    "dropped_overlength": "Traces dropped because prompt + completion exceed training.max_length tokens.",
    "steps": "Optimizer steps taken.",
    "tokens_trained": "Completion tokens trained on, over all epochs.",
    "train_loss": "Mean training loss over the run (TRL's training_loss: NLL for sft, the DFT loss for dft).",
    "eos_rate": "Share of greedy generations on 8 training prompts that end with eos before evaluation.max_tokens, "
                "in [0, 1]; 0 fails the asset (a model that never stops).",
    "wall_time_s": "Seconds the fine-tuning took (of the run that trained it, when the checkpoint is reused).",
    "loss_curve": "JSON list of [optimizer step, training loss] pairs.",
    # ---- eval (EVAL_COLUMNS)
    "k": "Samples drawn per benchmark item (evaluation.k), each at evaluation.temperature and verified.",
    "avg_at_k": "Avg@k: mean accuracy over the benchmark's items of k samples each at the evaluation temperature, "
                "in [0, 1]; the macro row is the unweighted mean over benchmarks.",
    "ci_low": "Lower " + _CI + ".",
    "ci_high": "Upper " + _CI + ".",
    "ci": "[ci_low, ci_high]: the 95% percentile bootstrap interval of avg_at_k over benchmark items.",
    "pass_at_k": "Pass@k: share of the benchmark's items with at least one correct of their k samples, in [0, 1]; "
                 "macro: the unweighted mean over benchmarks.",
    "n_problems": "Benchmark items evaluated; macro: their sum over benchmarks.",
    "no_answer_rate": "Share of the benchmark's samples (items x k) in which no final answer was found (verdict "
                      "no_answer), in [0, 1]; macro: the unweighted mean over benchmarks.",
    "truncation_rate": "Share of the benchmark's samples cut at evaluation.max_tokens (finish_reason length), in [0, 1]; "
                       "macro: the unweighted mean over benchmarks.",
    "mean_tokens": "Mean generated tokens per sample; macro: the unweighted mean over benchmarks.",
    # ---- per_problem
    "accuracy": "Share of the item's k samples verified correct, in [0, 1] (Avg@k is its mean over items).",
    "any_correct": "True when at least one of the item's k samples is correct (pass@k is its mean over items).",
}

OVERRIDES: dict[tuple[str, str], str] = {
    ("rm_diagnostics", "ci_low"): "Lower " + _DIAG_CI + ".",
    ("rm_diagnostics", "ci_high"): "Upper " + _DIAG_CI + ".",
    ("native_samples", "completion"): "The sampled text as generated (raw, uncleaned).",
    ("native_samples", "reason"): "The verifier's reason for the verdict (math-verify, exact match, no final answer "
                                  "found, a timeout or rejection cause).",
    ("traces", "completion"): "The trace: a native trace lightly cleaned (kept raw if cleaning broke verification); "
                              "a variant's rewrite or chosen candidate; null where the writer failed.",
    ("common_problems", "reason"): "Why the problem is not common: '; '-separated '<variant>: <its failure reason>'; "
                                   "empty when it is.",
    ("adaptation", "n_tokens"): _SCORED_TOKENS,
    ("exemplars", "n_tokens"): _SCORED_TOKENS,
}

PATTERNS: list[tuple[re.Pattern, str]] = [
    (re.compile(r"ppl_q([1-4])"), "Perplexity of quarter {0} of the completion's tokens under the base model: "
                                  "exp of their mean NLL (four contiguous parts of near-equal token counts, the "
                                  "first parts take the leftover tokens; NaN when the part is empty)."),
    (re.compile(r"reward_(\w+)"), "Score of reward model {0} (its name made SQL-friendly) for the trace, on that "
                                  "RM's own scale."),
]


# ---------------------------------------------------------------- column lineage

# Which upstream columns a computed column is made from: (the asset's input name, that input's column). The
# Dagster layer (assets/metadata.py `column_lineage`) turns an entry into `dagster/column_lineage` with the
# input's real asset key, leaving out inputs the asset does not have (native_traces reads native_samples, a
# variant's traces read native_traces), so the UI's lineage reaches from a score to the text it scored.
_SCORED_TEXT = [("traces", "prompt"), ("traces", "completion")]
_SAMPLED = [("checkpoints", "checkpoint"), ("benchmarks", "problem"), ("benchmarks", "answer")]
_JUDGED_SAMPLES = [("native_samples", "completion"), ("native_samples", "correct")]
LINEAGE: dict[str, dict[str, list[tuple[str, str]]]] = {
    "native_samples": {"completion": [("problem_pool", "problem")],
                       "extracted_answer": [("problem_pool", "problem")],
                       "correct": [("problem_pool", "answer")], "verdict": [("problem_pool", "answer")]},
    "native_traces": {"completion": [("native_samples", "completion")], "correct": [("native_samples", "correct")]},
    "traces": {"completion": [("native_traces", "completion"), ("problem_pool", "program")],
               "correct": [("problem_pool", "answer")],
               "semantic_preservation": [("native_traces", "completion")],
               "edit_distance": [("native_traces", "completion")],
               "repaired_steps": [("native_traces", "completion"), ("problem_pool", "program")]},
    "rewards": {"score": _SCORED_TEXT},
    "adaptation": {c: _SCORED_TEXT for c in ("nll", "ppl", "tokens", "token_nll", "n_tokens", "ppl_q1", "ppl_q2",
                                             "ppl_q3", "ppl_q4")},
    "checkpoints": {c: _SCORED_TEXT for c in ("checkpoint", "examples", "train_loss", "loss_curve")},
    "eval": {c: _SAMPLED for c in ("avg_at_k", "ci_low", "ci_high", "pass_at_k", "no_answer_rate",
                                   "truncation_rate", "mean_tokens")},
    "per_problem": {c: _SAMPLED for c in ("accuracy", "any_correct")},
    "rm_diagnostics": {c: _JUDGED_SAMPLES for c in ("p_correct_over_wrong", "ci_low", "ci_high", "mean_correct",
                                                    "mean_wrong", "sd_correct", "sd_wrong")},
}


def lineage(columns: Iterable[str], inputs: Iterable[str], asset: str | None = None) -> dict[str, list[tuple[str, str]]]:
    """For a table with `columns`, made by an asset with these input names: each computed column's upstream
    (input name, column) pairs, only those the asset reads. An entry for the asset's own name comes before
    its kind's (native_traces are chosen samples, other traces are rewrites)."""
    cols = [str(c) for c in columns]
    kind = asset_kind(asset) if asset else table_kind(cols)
    name = asset.rsplit("/", 1)[-1] if asset else None
    have = set(inputs)
    out = {}
    for col, sources in (LINEAGE.get(name or "") or LINEAGE.get(kind or "", {})).items():
        deps = [(i, c) for i, c in sources if i in have]
        if col in cols and deps:
            out[col] = deps
    return out


def asset_kind(asset: str) -> str:
    """The kind of an asset's table: its name (the last part of a prefixed key) less a variant or `base` prefix
    when the rest is a per-variant kind."""
    name = asset.rsplit("/", 1)[-1]
    for prefix in [*variants.names(), "base"]:
        rest = name.removeprefix(prefix + "_")
        if rest != name and rest in VARIANT_KINDS:
            return rest
    return name


def table_kind(columns: Iterable[str]) -> str | None:
    """The kind of table these columns make (KIND_MARKERS), None when no kind's markers are all there."""
    cols = set(map(str, columns))
    return next((kind for kind, marker in KIND_MARKERS if marker <= cols), None)


def description(column: str, kind: str | None = None) -> str:
    """What `column` means in a table of `kind`; "" when nothing describes it."""
    if (kind, column) in OVERRIDES:
        return OVERRIDES[(kind, column)]
    if column in COLUMNS:
        return COLUMNS[column]
    for pattern, text in PATTERNS:
        m = pattern.fullmatch(column)
        if m:
            return text.format(*m.groups())
    return ""


def describe(columns: Iterable[str], asset: str | None = None) -> dict[str, str]:
    """Each column's description in the table of `asset` (None: the kind is told from the columns)."""
    cols = [str(c) for c in columns]
    kind = asset_kind(asset) if asset else table_kind(cols)
    return {c: description(c, kind) for c in cols}
