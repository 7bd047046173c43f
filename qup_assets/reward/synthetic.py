"""The synthetic world's reward model, trained the way real outcome RMs are.

1. A language-model backbone pretrained on correct solutions written by every writer of the world
   (both students, the textbook, the Oracle), as Qwen2.5-Math-RM starts from an instruct model: the
   dense next-token signal is where a model this small learns the arithmetic it later judges.
2. A score head trained on preference pairs, as annotators label them, with a Bradley-Terry loss on the
   score at the last token (the one every scorer reads), plus step labels at every line end (process
   supervision, as PRM800K-style data gives: a line is right while the solution so far agrees with a right
   one in the same words). Measured: the pairwise signal alone, 4000 fresh pairs and 400 steps, did not
   teach this model to check a step (held-out slips 0.49, P(correct > wrong) on native samples 0.47).
   The pairs:
   - correctness pairs (most): the same problem, the same writer, one solution right and one with a
     student's mistake (world/mistakes.py); annotators pick the right one `CORRECTNESS_AGREEMENT` of
     the time.
   - style pairs (`style_pair_share`): both right, the Oracle's wording against a student's or the
     textbook's; annotators prefer the Oracle's `STYLE_AGREEMENT` of the time, a taste rather than a
     rule. Under Bradley-Terry a pair preferred with probability p is worth at most log(p / (1 - p))
     of margin, so the style bonus stays smaller than the correctness margin.
What it learns is measured, not assumed: `rm_diagnostics` scores each family's own right and wrong
samples, and the report shows whether the RM tells them apart.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from qup_assets.backends.prompting import render_prompt
from qup_assets.common import problem_id, publish_dir, stable_hash
from qup_assets.reward.scorers import rm_text
from qup_assets.study import Prompt
from qup_assets.training.pretrain import encode_examples, pretrain
from qup_assets.world.generator import WorldProblem, generate, textbook_steps
from qup_assets.world.mistakes import MISTAKES, correct_chain, garble, wrong_chain
from qup_assets.world.shipped import code_digest, copy_model, excluded_digest, find
from qup_assets.world.student import STUDENT_CODE, build_model, build_tokenizer
from qup_assets.world.styles import STYLES

# The code that decides a synthetic RM's weights (the students' world and tokenizer, and this module).
RM_CODE = STUDENT_CODE + ("qup_assets.reward.synthetic", "qup_assets.reward.scorers")
TRAINING_FIELDS = ("train_problems", "train_steps", "pretrain_steps", "style_pair_share", "hidden_size", "num_layers")

CORRECTNESS_AGREEMENT = 0.95
STYLE_AGREEMENT = 0.7
WRITERS = ("qwen", "llama", "textbook", "oracle")


@dataclass
class RewardModelReport:
    path: str
    pairs: int
    heldout_pair_accuracy: float
    heldout_by_kind: dict = field(default_factory=dict)  # pair kind (mistake or "style") -> accuracy
    pair_kinds: dict = field(default_factory=dict)
    writers: dict = field(default_factory=dict)
    loss_curve: list = field(default_factory=list)
    pretrain_loss_curve: list = field(default_factory=list)


def write(writer: str, p: WorldProblem, start: int, steps: list[tuple], answer) -> str:
    if writer == "textbook":
        return textbook_steps(start, steps, answer, p.name, p.items)
    return STYLES[writer].render_steps(steps, answer, p.items)


def preference_pairs(problems: list[WorldProblem], seed: int, style_pair_share: float = 0.2) -> list[dict]:
    """One labelled pair per problem: `chosen` is the side the annotator preferred (labels are noisy)."""
    rng = random.Random(seed)
    pairs = []
    for p in problems:
        right = correct_chain(p.program)
        if rng.random() < style_pair_share:
            other = rng.choice([w for w in WRITERS if w != "oracle"])
            a, b = write("oracle", p, *right), write(other, p, *right)
            kind, writer, agree = "style", f"oracle vs {other}", STYLE_AGREEMENT
        else:
            writer = rng.choice(WRITERS)
            mistake = rng.choice(MISTAKES)
            a, b = write(writer, p, *right), write(writer, p, *wrong_chain(p.program, mistake, rng))
            if mistake == "garbled":
                b = garble(b, rng)
            kind, agree = mistake, CORRECTNESS_AGREEMENT
        if a == b:
            continue
        flipped = rng.random() >= agree
        pairs.append({"problem": p.problem, "chosen": b if flipped else a, "rejected": a if flipped else b,
                      "kind": kind, "writer": writer, "flipped": flipped, "better": a, "worse": b})
    return pairs


def _backbone(problems: list[WorldProblem], tok, hidden_size: int, num_layers: int, steps: int, seed: int, log):
    """A causal LM pretrained on every writer's correct solutions (the RM's starting point)."""

    rng = random.Random(seed)
    prompts = [render_prompt(tok, Prompt(), p.problem) for p in problems]
    texts = [write(rng.choice(WRITERS), p, *correct_chain(p.program)) for p in problems]
    lm = build_model("qwen2", tok, hidden_size, num_layers, seed)
    stats = pretrain(lm, tok, encode_examples(tok, prompts, texts, max_len=1024), steps, 32, 3e-3, seed,
                     lambda m: log(f"reward model backbone: {m}"))
    return lm, stats


def train_reward_model(problems: list[WorldProblem], out_dir: Path, seed: int = 0, steps: int = 300,
                       batch_size: int = 16, lr: float = 3e-4, hidden_size: int = 128, num_layers: int = 4,
                       pretrain_steps: int = 600, style_pair_share: float = 0.2, log=print) -> RewardModelReport:
    import torch
    from transformers import Qwen2ForSequenceClassification


    pairs = preference_pairs(problems, seed, style_pair_share)
    n_held = max(20, len(pairs) // 10)
    train, held = pairs[n_held:], pairs[:n_held]
    texts = [x for pr in pairs for x in (pr["problem"], pr["better"], pr["worse"])]
    tok = build_tokenizer(texts, "qwen2", vocab_size=640)
    lm, pre = _backbone(problems[n_held:], tok, hidden_size, num_layers, pretrain_steps, seed, log)
    tok.padding_side = "right"
    config = lm.config
    config.num_labels = 1
    torch.manual_seed(seed)
    model = Qwen2ForSequenceClassification(config)
    model.model.load_state_dict(lm.model.state_dict())
    del lm

    def encode(batch, side):
        return tok([rm_text(tok, b["problem"], b[side]) for b in batch], return_tensors="pt", padding=True,
                   add_special_tokens=False)

    def step_targets(batch, side, texts, offsets, last):
        """(positions, labels) of every line end of each solution: 1 while its lines so far agree with the
        right solution's (same writer), else 0; the last token: whether the solution is the right one."""
        rows, cols, labels = [], [], []
        for r, b in enumerate(batch):
            ends = offsets[r, : int(last[r]) + 1, 1].tolist()
            good_lines = b["better"].split("\n")
            lines = b[side].split("\n")
            at = texts[r].rfind(b[side])
            for i, line in enumerate(lines[:-1]):
                at += len(line)
                t = next((j for j, e in enumerate(ends) if e > at), None)
                if t is not None:
                    rows.append(r), cols.append(t), labels.append(float(lines[: i + 1] == good_lines[: i + 1]))
                at += 1
            rows.append(r), cols.append(int(last[r])), labels.append(float(b[side] == b["better"]))
        return torch.tensor(rows), torch.tensor(cols), torch.tensor(labels)

    def scores_and_steps(batch, side):
        """Scores at the last token and the step-label loss, from one tokenization of the batch."""
        texts = [rm_text(tok, b["problem"], b[side]) for b in batch]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False, return_offsets_mapping=True)
        hidden = model.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        all_scores = model.score(hidden)[..., 0]
        last = enc["attention_mask"].sum(-1) - 1
        rows, cols, labels = step_targets(batch, side, texts, enc["offset_mapping"], last)
        step_loss = torch.nn.functional.binary_cross_entropy_with_logits(all_scores[rows, cols], labels)
        return all_scores[torch.arange(len(batch)), last], step_loss

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)
    curve = []
    model.train()
    running = 0.0
    for step in range(1, steps + 1):
        idx = torch.randint(len(train), (batch_size,), generator=gen).tolist()
        batch = [train[i] for i in idx]
        rc, sc = scores_and_steps(batch, "chosen")
        rr, sr = scores_and_steps(batch, "rejected")
        loss = -torch.nn.functional.logsigmoid(rc - rr).mean() + (sc + sr) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running += loss.item()
        if step % 50 == 0 or step == steps:
            n = 50 if step % 50 == 0 else step % 50
            curve.append((step, running / n))
            running = 0.0
            log(f"reward model step {step}/{steps}: loss {curve[-1][1]:.3f} (Bradley-Terry + step labels)")
    model.eval()
    # held-out accuracy against the truth (the better side), not against the noisy labels
    wins: dict = {}
    with torch.inference_mode():
        for lo in range(0, len(held), 32):
            b = held[lo : lo + 32]
            won = model(**encode(b, "better")).logits[:, 0] > model(**encode(b, "worse")).logits[:, 0]
            for pr, w in zip(b, won.tolist()):
                wins.setdefault(pr["kind"], []).append(w)
    publish_dir(lambda tmp: (model.save_pretrained(tmp), tok.save_pretrained(tmp)), out_dir)
    flat = [w for ws in wins.values() for w in ws]
    return RewardModelReport(str(out_dir), len(pairs), sum(flat) / len(flat),
                             {k: sum(v) / len(v) for k, v in sorted(wins.items())},
                             dict(Counter(pr["kind"] for pr in pairs)), dict(Counter(pr["writer"] for pr in pairs)),
                             curve, pre.loss_curve)


def train_study_reward_model(rm, knobs: dict, exclude_ids: set[str], out_dir: Path, log=print) -> RewardModelReport:
    """A study's `synthetic` RM (study.RewardModel): its own corpus of world problems drawn like the pool's
    (`knobs`), none of them a pool or benchmark problem, then `train_reward_model`."""
    seed = int(stable_hash("reward-model", rm.name)[:8], 16)
    problems = [p for p in generate(rm.train_problems, seed, **knobs) if problem_id(p.problem) not in exclude_ids]
    return train_reward_model(problems, out_dir, seed=0, steps=rm.train_steps, pretrain_steps=rm.pretrain_steps,
                              style_pair_share=rm.style_pair_share, hidden_size=rm.hidden_size,
                              num_layers=rm.num_layers, log=log)


def reward_model_recipe(rm, knobs: dict, exclude_ids: set[str]) -> dict:
    """What decides a synthetic RM's weights (its scoring settings, batch sizes and backend, do not)."""
    return {"name": rm.name, "training": {f: getattr(rm, f) for f in TRAINING_FIELDS}, "corpus": dict(knobs),
            "excluded_problems": excluded_digest(exclude_ids), "world_code": code_digest(RM_CODE)}


def provide_reward_model(study: str, rm, knobs: dict, exclude_ids: set[str], out_dir: Path, log: Callable[[str], None] = print,
                         warn: Callable[[str], None] = print) -> tuple[dict, str]:
    """The study's synthetic RM in `out_dir`: the shipped folder when its recipe matches (`qup world build`),
    else trained here. Returns (the RewardModelReport's fields, where it came from)."""
    shipped, why = find(study, "reward_models", rm.name, reward_model_recipe(rm, knobs, exclude_ids))
    if shipped:
        copy_model(shipped, Path(out_dir))
        log(f"reward model {rm.name}: the shipped folder {shipped.folder} (its recipe matches)")
        return {**shipped.record, "path": str(out_dir)}, shipped.origin
    if why:
        warn(why)
    return asdict(train_study_reward_model(rm, knobs, exclude_ids, Path(out_dir), log=log)), "trained in this run"
