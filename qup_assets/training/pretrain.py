"""Tiny causal-LM pretraining from scratch: a plain torch loop, loss on the solution tokens only, on the device
the model is on (a GPU: bf16 autocast; a CPU: float32, the same bytes on any thread count)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence


@dataclass
class PretrainStats:
    steps: int = 0
    tokens_seen: int = 0
    seconds: float = 0.0
    loss_curve: list[tuple[int, float]] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_seen / max(self.seconds, 1e-9)


def encode_examples(tokenizer, prompts: Sequence[str], completions: Sequence[str], max_len: int):
    """(input_ids, labels) per example; labels mask the prompt with -100 and end with eos."""
    p_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    c_ids = tokenizer(list(completions), add_special_tokens=False)["input_ids"]
    out = []
    for p, c in zip(p_ids, c_ids):
        c = c + [tokenizer.eos_token_id]
        ids = (p + c)[:max_len]
        labels = ([-100] * len(p) + c)[:max_len]
        out.append((ids, labels))
    return out


def pretrain(
    model,
    tokenizer,
    examples: list[tuple[list[int], list[int]]],
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    log: Callable[[str], None] = print,
    log_every: int = 50,
) -> PretrainStats:
    import torch

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))
    )
    pad = tokenizer.pad_token_id
    device = next(model.parameters()).device
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    stats = PretrainStats()
    model.train()
    started = time.monotonic()
    running = 0.0
    for step in range(1, steps + 1):
        idx = torch.randint(len(examples), (batch_size,), generator=gen).tolist()
        batch = [examples[i] for i in idx]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.full((batch_size, width), pad, dtype=torch.long)
        labels = torch.full((batch_size, width), -100, dtype=torch.long)
        attn = torch.zeros((batch_size, width), dtype=torch.long)
        for r, (x, y) in enumerate(batch):
            ids[r, : len(x)] = torch.tensor(x)
            labels[r, : len(y)] = torch.tensor(y)
            attn[r, : len(x)] = 1
        with autocast:
            loss = model(input_ids=ids.to(device), attention_mask=attn.to(device), labels=labels.to(device)).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        stats.tokens_seen += int(attn.sum())
        running += loss.item()
        if step % log_every == 0 or step == steps:
            n = log_every if step % log_every == 0 else step % log_every
            stats.loss_curve.append((step, running / n))
            running = 0.0
            elapsed = time.monotonic() - started
            log(f"pretrain step {step}/{steps}: loss {stats.loss_curve[-1][1]:.3f}, "
                f"{stats.tokens_seen / elapsed:.0f} tokens/s, ETA {elapsed / step * (steps - step):.0f}s")
    model.eval()
    stats.steps = steps
    stats.seconds = time.monotonic() - started
    return stats
