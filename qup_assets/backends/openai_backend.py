"""OpenAI-compatible HTTP backend (completions or chat): a `vllm serve` fleet or any provider.

The API key is read from the environment variable the study names and is never
logged, stored in metadata or put in the cache key. Transient failures (connection
errors, 429, 5xx) are retried with exponential backoff; other 4xx answers fail at
once with the server's message, because retrying a bad request cannot fix it. The one
exception is a prompt longer than the server's context: that is a property of one prompt,
so it comes back as a completion with finish_reason "prompt_too_long" (recorded, and cached
under the server's URL and model like any answer) instead of failing the whole step.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from qup_assets.backends.base import (
    BackendError,
    Completion,
    ProgressFn,
    Request,
    SamplingParams,
    TokenLogprobs,
    row_seed,
)
from qup_assets.common import stable_hash


class RequestRejected(BackendError):
    """The server refused one request (a 4xx other than 429): retrying the same request cannot help."""

    def __init__(self, message: str, code: int, detail: str):
        super().__init__(message)
        self.code, self.detail = code, detail


def _too_long(e: RequestRejected) -> bool:
    """vLLM's and OpenAI's answer to a prompt longer than the model's context. vLLM 0.26 clamps max_tokens to the room
    the prompt leaves, so a prompt that fills the context is refused as "max_tokens must be at least 1, got 0"."""
    text = e.detail.lower()
    return e.code == 400 and ("context length" in text or "maximum context" in text or "too long" in text
                              or "max_tokens must be at least 1, got 0" in text)


class OpenAIBackend:
    def __init__(self, base_url: str, model: str, api_key_env: str | None = None, api: str = "completions",
                 max_concurrency: int = 8, timeout: float = 300.0, max_retries: int = 5, send_seed: bool = True,
                 backoff: float = 1.0):
        if api_key_env and not os.environ.get(api_key_env):
            raise BackendError(f"the study names api_key_env {api_key_env!r}, but that environment variable is not set")
        self._api_key = os.environ.get(api_key_env) if api_key_env else None
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api = api
        self.max_concurrency = max_concurrency
        # the cache hands over many chunks per call, so max_concurrency requests stay in flight instead of
        # every 64-prompt chunk waiting on its slowest request
        self.prompts_per_call = 16 * max_concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.send_seed = send_seed
        self.backoff = backoff
        self.fingerprint = stable_hash("openai", self.base_url, model, api)

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIBackend({self.base_url!r}, model={self.model!r}, api={self.api!r})"

    def _post(self, path: str, body: dict) -> dict:
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        url = f"{self.base_url}{path}"
        last = ""
        for attempt in range(self.max_retries + 1):
            try:
                req = urllib.request.Request(url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read())
            except urllib.error.HTTPError as e:
                detail = e.read()[:500].decode("utf-8", "replace")
                if e.code != 429 and e.code < 500:
                    raise RequestRejected(f"{url} answered {e.code}: {detail} (check model name {self.model!r}, "
                                          "api key and request parameters)", e.code, detail) from None
                last = f"{e.code}: {detail}"
            except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError) as e:
                last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
            if attempt < self.max_retries:
                time.sleep(self.backoff * 2**attempt)
        raise BackendError(f"{url} unreachable after {self.max_retries + 1} attempts (last error {last}); "
                           "is the server running and base_url right?")

    def _one(self, req: Request, params: SamplingParams) -> Completion:
        body: dict = {"model": self.model, "max_tokens": params.max_tokens, "temperature": params.temperature,
                      "top_p": params.top_p, "n": 1}
        if params.stop:
            body["stop"] = list(params.stop)
        if self.send_seed:
            body["seed"] = row_seed(params.seed, req.prompt, req.sample_idx) % (2**31)
        try:
            if self.api == "chat":
                body["messages"] = [{"role": "user", "content": req.prompt}]
                resp = self._post("/chat/completions", body)
                choice = resp["choices"][0]
                text = (choice.get("message") or {}).get("content") or ""
            else:
                body["prompt"] = req.prompt
                resp = self._post("/completions", body)
                choice = resp["choices"][0]
                text = choice.get("text") or ""
        except RequestRejected as e:
            if _too_long(e):  # this one prompt cannot fit: a recorded outcome for it, not a failed step
                return Completion(text="", n_tokens=0, finish_reason="prompt_too_long")
            raise
        n_tokens = int((resp.get("usage") or {}).get("completion_tokens") or 0)
        return Completion(text=text, n_tokens=n_tokens, finish_reason="length" if choice.get("finish_reason") == "length" else "stop")

    def sample(self, requests: Sequence[Request], params: SamplingParams, progress: ProgressFn | None = None) -> list[Completion]:
        # The first request that fails for good ends the call: the others are never sent, so a server that is
        # down costs one round of retries (the requests in flight), not one per max_concurrency requests.
        gave_up = threading.Event()

        def one(req: Request) -> Completion:
            if gave_up.is_set():
                raise BackendError("cancelled: another request to this server failed")
            try:
                return self._one(req, params)
            except BackendError:
                gave_up.set()
                raise

        pool = ThreadPoolExecutor(max_workers=self.max_concurrency)
        try:
            return list(pool.map(one, requests))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def logprobs(self, prompts: Sequence[str], completions: Sequence[str], progress: ProgressFn | None = None) -> list[TokenLogprobs]:
        raise BackendError("token log-probs over HTTP are not supported: score perplexity with the family's "
                           "transformers or vllm backend on the local model folder")
