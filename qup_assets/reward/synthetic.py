"""The synthetic world's reward model: a small sequence classifier trained with a Bradley-Terry loss.

Like real RMs, it learns from strong-model preferences: the chosen side of every pair is
Oracle-written and correct; the rejected side is a corrupted or wrong solution, written in a
student's style, the textbook's, or the Oracle's own. So it learns correctness, and it also
learns that the Oracle's style is what "good" looks like. The report says so.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from qup_assets.world.generator import WorldProblem, textbook_solution
from qup_assets.world.styles import STYLES


@dataclass
class RewardModelReport:
    path: str
    pairs: int
    heldout_pair_accuracy: float
    rejected_styles: dict = field(default_factory=dict)
    corruptions: dict = field(default_factory=dict)
    loss_curve: list = field(default_factory=list)


def _corrupt(text: str, rng: random.Random) -> tuple[str, str]:
    """A wrong solution from a correct one: a changed number, a wrong final answer, or a cut-off ending."""
    import re

    nums = [m for m in re.finditer(r"\d+", text)]
    kind = rng.choice(["slip", "answer", "truncate"])
    if kind == "truncate" and "\n" in text:
        lines = text.split("\n")
        return "\n".join(lines[: max(1, len(lines) // 2)]), kind
    if kind == "answer" or not nums:
        m = nums[-1] if nums else None
        if m is None:
            return text + " 0", "answer"
        return text[: m.start()] + str(int(m.group()) + rng.randint(1, 9)) + text[m.end() :], "answer"
    m = rng.choice(nums[: max(1, len(nums) - 1)])
    return text[: m.start()] + str(int(m.group()) + rng.randint(1, 9)) + text[m.end() :], "slip"


def preference_pairs(problems: list[WorldProblem], seed: int) -> list[dict]:
    rng = random.Random(seed)
    oracle = STYLES["oracle"]
    students = [s for name, s in STYLES.items() if name != "oracle"]
    pairs = []
    for p in problems:
        chosen = oracle.render(p.program, p.items)
        r = rng.random()
        if r < 0.5:
            style = rng.choice(students)
            base, source = style.render(p.program, p.items), style.name
        elif r < 0.75:
            base, source = textbook_solution(p.program, p.name, p.items), "textbook"
        else:
            base, source = chosen, "oracle"
        rejected, corruption = _corrupt(base, rng)
        pairs.append({"problem": p.problem, "chosen": chosen, "rejected": rejected, "rejected_style": source,
                      "corruption": corruption})
    return pairs


def train_reward_model(problems: list[WorldProblem], out_dir: Path, seed: int = 0, steps: int = 300,
                       batch_size: int = 16, lr: float = 2e-3, hidden_size: int = 64, num_layers: int = 2,
                       log=print) -> RewardModelReport:
    import torch
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

    from qup_assets.reward.scorers import rm_text
    from qup_assets.storage.tables import publish_model_dir
    from qup_assets.world.student import build_tokenizer

    pairs = preference_pairs(problems, seed)
    n_held = max(20, len(pairs) // 10)
    train, held = pairs[n_held:], pairs[:n_held]
    texts = [x for pr in pairs for x in (pr["problem"], pr["chosen"], pr["rejected"])]
    tok = build_tokenizer(texts, "qwen2", vocab_size=640)
    tok.padding_side = "right"
    torch.manual_seed(seed)
    heads = max(1, hidden_size // 32)
    model = Qwen2ForSequenceClassification(Qwen2Config(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=hidden_size * 3, num_hidden_layers=num_layers,
        num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=1024, num_labels=1,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True))

    def encode(batch, side):
        return tok([rm_text(tok, b["problem"], b[side]) for b in batch], return_tensors="pt", padding=True,
                   add_special_tokens=False)

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)
    curve = []
    model.train()
    running = 0.0
    for step in range(1, steps + 1):
        idx = torch.randint(len(train), (batch_size,), generator=gen).tolist()
        batch = [train[i] for i in idx]
        rc = model(**encode(batch, "chosen")).logits[:, 0]
        rr = model(**encode(batch, "rejected")).logits[:, 0]
        loss = -torch.nn.functional.logsigmoid(rc - rr).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running += loss.item()
        if step % 50 == 0 or step == steps:
            n = 50 if step % 50 == 0 else step % 50
            curve.append((step, running / n))
            running = 0.0
            log(f"reward model step {step}/{steps}: Bradley-Terry loss {curve[-1][1]:.3f}")
    model.eval()
    with torch.inference_mode():
        wins = 0
        for lo in range(0, len(held), 32):
            b = held[lo : lo + 32]
            wins += int((model(**encode(b, "chosen")).logits[:, 0] > model(**encode(b, "rejected")).logits[:, 0]).sum())
    publish_model_dir(lambda tmp: (model.save_pretrained(tmp), tok.save_pretrained(tmp)), out_dir)
    styles: dict = {}
    corruptions: dict = {}
    for pr in pairs:
        styles[pr["rejected_style"]] = styles.get(pr["rejected_style"], 0) + 1
        corruptions[pr["corruption"]] = corruptions.get(pr["corruption"], 0) + 1
    return RewardModelReport(str(out_dir), len(pairs), wins / len(held), styles, corruptions, curve)
