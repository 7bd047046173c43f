"""Open the backend a family asks for, over the model folder base_model resolved."""

from __future__ import annotations

from pathlib import Path

from qup_assets.backends.openai_backend import OpenAIBackend
from qup_assets.backends.transformers_backend import TransformersBackend
from qup_assets.backends.vllm_backend import VLLMBackend
from qup_assets.study import Backend, Family


def load_tokenizer(model_dir: str | Path, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=trust_remote_code)


def open_lm(backend: Backend, model_dir: str | Path, *, dtype: str = "auto", trust_remote_code: bool = False,
            seed: int = 0):
    """A generation backend over a model folder (or, for an OpenAI-compatible server, a model name)."""
    kind = backend.kind
    if kind == "transformers":

        return TransformersBackend(model_dir, dtype=dtype, batch_size=backend.batch_size,
                                   trust_remote_code=trust_remote_code)
    if kind == "vllm":

        engine = backend.engine
        args = engine.engine_args()
        if "dtype" not in args and dtype != "auto":
            args["dtype"] = dtype
        return VLLMBackend(model_dir, seed=seed, trust_remote_code=trust_remote_code,
                           prompts_per_call=engine.prompts_per_call, **args)
    if kind == "openai":
        return OpenAIBackend(backend.base_url, backend.model or str(model_dir), api_key_env=backend.api_key_env,
                             api=backend.api, max_concurrency=backend.max_concurrency,
                             send_seed=backend.per_request_seed, max_retries=backend.max_retries,
                             backoff=backend.retry_backoff)
    raise ValueError(f"unknown backend {kind!r}")


def open_backend(family: Family, model_dir: str | Path, seed: int = 0):
    """The family's generation backend over one of its model folders (base model or checkpoint)."""
    dtype = family.student.dtype if family.student.kind == "hf" else "auto"
    return open_lm(family.backend, model_dir, dtype=dtype, trust_remote_code=family.trust_remote_code, seed=seed)


def open_scorer(family: Family, model_dir: str | Path):
    """Log-probabilities are computed locally: the vLLM engine when the family uses vLLM, otherwise transformers
    (an OpenAI-served family is scored on its local weights)."""
    if family.backend.kind == "vllm":

        return VLLMBackend(model_dir, trust_remote_code=family.trust_remote_code)

    return TransformersBackend(model_dir, trust_remote_code=family.trust_remote_code)
