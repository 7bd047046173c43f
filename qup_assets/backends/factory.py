"""Open the backend a family asks for, over the model folder base_model resolved."""

from __future__ import annotations

from pathlib import Path

from qup_assets.study import Family


def load_tokenizer(model_dir: str | Path, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=trust_remote_code)


def open_backend(family: Family, model_dir: str | Path, seed: int = 0):
    kind = family.backend.kind
    if kind == "transformers":
        from qup_assets.backends.transformers_backend import TransformersBackend

        dtype = family.student.dtype if family.student.kind == "hf" else "auto"
        return TransformersBackend(model_dir, dtype=dtype, batch_size=family.backend.batch_size,
                                   trust_remote_code=family.trust_remote_code)
    if kind == "vllm":
        from qup_assets.backends.vllm_backend import VLLMBackend

        engine = family.backend.engine
        args = engine.engine_args()
        if "dtype" not in args and family.student.kind == "hf":
            args["dtype"] = family.student.dtype
        return VLLMBackend(model_dir, seed=seed, trust_remote_code=family.trust_remote_code,
                           prompts_per_call=engine.prompts_per_call, **args)
    if kind == "openai":
        from qup_assets.backends.openai_backend import OpenAIBackend

        b = family.backend
        return OpenAIBackend(b.base_url, b.model or str(model_dir), api_key_env=b.api_key_env, api=b.api,
                             max_concurrency=b.max_concurrency, send_seed=b.per_request_seed)
    raise ValueError(f"unknown backend {kind!r}")
