"""Reward-model backends behind one call: score a batch of (problem, solution) pairs.

- sequence_classifier: Skywork-Reward style, num_labels=1, the logit is the score
- qwen_outcome:        Qwen2.5-Math-RM style, loaded with AutoModel (remote code only if the study allows it)
- process:             Qwen2.5-Math-PRM style, steps joined with a step token, P(positive) per step,
                       aggregated by min, mean or last
- nemotron:            Llama-3.1-Nemotron-70B-Reward-HF style: a causal LM whose reward is the logit of
                       vocabulary token 0 at the position after the conversation (NVIDIA copied the RM head
                       into that row of the output embedding; its model card reads scores[0][0][0])
Inputs are chat-templated as the model expects (system if any, user: problem, assistant: solution), padded
on the right, and batched by a token budget (longest first), not a fixed count: 4096-token traces and
40-token ones do not share a batch shape. On a GPU the model loads in bf16 across the visible devices.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from qup_assets.backends.cache import ResponseCache, cached_chunks
from qup_assets.backends.fingerprint import folder_fingerprint
from qup_assets.backends.vllm_backend import open_llm
from qup_assets.common import stable_hash
from qup_assets.reward.process import SymbolicProcessRM

# The system turn Qwen2.5-Math-RM-72B's and -PRM's model cards put before the problem.
QWEN_MATH_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
SCORE_COLUMNS = ["model_family", "problem_id", "reward_model", "score"]


def rm_text(tokenizer, problem: str, solution: str, system: str | None = None) -> str:
    if getattr(tokenizer, "chat_template", None):
        turns = [{"role": "system", "content": system}] if system else []
        return tokenizer.apply_chat_template(
            turns + [{"role": "user", "content": problem}, {"role": "assistant", "content": solution}], tokenize=False)
    return f"{system}\n\n{problem}\n\n{solution}" if system else f"{problem}\n\n{solution}"


def load_kwargs() -> dict:
    """bf16 spread over the visible GPUs (a 72B RM needs several), float32 on CPU."""
    import torch

    return {"dtype": torch.bfloat16, "device_map": "auto"} if torch.cuda.is_available() else {}


class _Base:
    default_system: str | None = None

    def __init__(self, model_dir: str | Path, batch_size: int = 8, trust_remote_code: bool = False,
                 system: str | None = None, max_batch_tokens: int = 16384, max_length: int = 4096):
        from transformers import AutoTokenizer

        self.model_dir = str(model_dir)
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_length = max_length
        self.trust_remote_code = trust_remote_code
        self.system = system if system is not None else self.default_system
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, trust_remote_code=trust_remote_code)
        self.tokenizer.padding_side = "right"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # the system turn is part of what is scored, so part of the cache key
        fp = folder_fingerprint(self.model_dir)
        self.fingerprint = stable_hash(fp, "system", self.system) if self.system else fp

    def _texts(self, problems: Sequence[str], solutions: Sequence[str]) -> list[str]:
        return [rm_text(self.tokenizer, p, s, self.system) for p, s in zip(problems, solutions)]

    def batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Positions grouped longest first, each batch within max_batch_tokens (padded) and batch_size."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        out: list[list[int]] = []
        for i in order:
            if out and len(out[-1]) < self.batch_size and (len(out[-1]) + 1) * lengths[out[-1][0]] <= self.max_batch_tokens:
                out[-1].append(i)
            else:
                out.append([i])
        return out

    def score(self, problems: Sequence[str], solutions: Sequence[str]) -> list[float]:
        import torch

        ids = self.tokenizer(self._texts(problems, solutions), truncation=True, max_length=self.max_length,
                             add_special_tokens=False)["input_ids"]
        out: list[float] = [float("nan")] * len(ids)
        device = getattr(self.model, "device", None)
        with torch.inference_mode():
            for batch in self.batches([len(x) for x in ids]):
                enc = self.tokenizer.pad({"input_ids": [ids[i] for i in batch]}, return_tensors="pt")
                if device is not None:
                    enc = {k: v.to(device) for k, v in enc.items()}
                for i, v in zip(batch, self._batch_scores(enc)):
                    out[i] = v
        return out


class SequenceClassifierRM(_Base):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        from transformers import AutoModelForSequenceClassification

        self.model = AutoModelForSequenceClassification.from_pretrained(
            self.model_dir, trust_remote_code=self.trust_remote_code, **load_kwargs()).eval()
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id

    def _batch_scores(self, enc) -> list[float]:
        return self.model(**enc).logits[:, 0].float().tolist()


class OutcomeRM(_Base):
    """AutoModel whose first output is the reward: [B], [B, 1], or per-token [B, T(, 1)] read at the last token.
    Its system turn defaults to the one Qwen2.5-Math-RM-72B's model card uses."""

    default_system = QWEN_MATH_SYSTEM

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        from transformers import AutoModel

        self.model = AutoModel.from_pretrained(self.model_dir, trust_remote_code=self.trust_remote_code,
                                               **load_kwargs()).eval()

    def _batch_scores(self, enc) -> list[float]:
        out = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        r = out[0] if isinstance(out, (tuple, list)) else getattr(out, "logits", None)
        if r is None:
            r = next(iter(out.values()))
        r = r.float()
        if r.dim() == 3:
            r = r[..., 0]
        if r.dim() == 2 and r.shape[1] > 1:  # per-token rewards: the last real token's
            last = enc["attention_mask"].sum(-1) - 1
            r = r[range(len(last)), last]
        return r.reshape(-1).tolist()


class ProcessRM(_Base):
    default_system = QWEN_MATH_SYSTEM

    def __init__(self, *a, aggregation: str = "min", step_token: str = "<extra_0>", **k):
        super().__init__(*a, **k)
        from transformers import AutoConfig, AutoModel, AutoModelForTokenClassification

        config = AutoConfig.from_pretrained(self.model_dir, trust_remote_code=self.trust_remote_code)
        archs = config.architectures or []
        cls = AutoModelForTokenClassification if any(a.endswith("ForTokenClassification") for a in archs) else AutoModel
        self.model = cls.from_pretrained(self.model_dir, trust_remote_code=self.trust_remote_code,
                                         **load_kwargs()).eval()
        self.aggregation = aggregation
        self.step_token = step_token
        self.step_id = self.tokenizer.convert_tokens_to_ids(step_token)
        if self.step_id is None or self.step_id == self.tokenizer.unk_token_id:
            raise ValueError(f"process RM tokenizer has no step token {step_token!r}")

    @staticmethod
    def split_steps(solution: str) -> list[str]:
        steps = [s.strip() for s in solution.split("\n\n") if s.strip()]
        if len(steps) <= 1:  # single-spaced solutions: one step per line
            steps = [s.strip() for s in solution.split("\n") if s.strip()]
        return steps or [solution]

    def _texts(self, problems, solutions):
        return [rm_text(self.tokenizer, p, "".join(s + self.step_token for s in self.split_steps(sol)), self.system)
                for p, sol in zip(problems, solutions)]

    def _batch_scores(self, enc) -> list[float]:
        import torch

        out = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        logits = (out[0] if isinstance(out, (tuple, list)) else out.logits).float()
        probs = torch.softmax(logits, dim=-1)[..., 1]
        scores = []
        for row, ids in zip(probs, enc["input_ids"]):
            p = row[ids == self.step_id]
            if len(p) == 0:
                scores.append(float("nan"))
            elif self.aggregation == "min":
                scores.append(float(p.min()))
            elif self.aggregation == "mean":
                scores.append(float(p.mean()))
            else:
                scores.append(float(p[-1]))
        return scores


class NemotronRM(_Base):
    """A causal LM whose reward is the logit of token 0 after the conversation (Llama-3.1-Nemotron-70B-Reward-HF)."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(self.model_dir, trust_remote_code=self.trust_remote_code,
                                                          **load_kwargs()).eval()

    def _batch_scores(self, enc) -> list[float]:
        logits = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
        last = enc["attention_mask"].sum(-1) - 1
        return logits[range(len(last)), last, 0].float().tolist()


class VLLMRewardModel:
    """A reward model on vLLM's pooling runner: the GPU throughput a 72B RM needs (tensor parallel, its own
    batching). Sequence classifiers (Skywork-Reward) give their raw logit through `classify`; an outcome RM
    such as Qwen2.5-Math-RM-72B (`Qwen2ForRewardModel` in vLLM) its per-token reward, read at the last token.
    Same texts and token ids as the transformers scorers, so the two agree (a test checks it)."""

    KINDS = ("sequence_classifier", "synthetic", "qwen_outcome")

    def __init__(self, kind: str, model_dir: str | Path, system: str | None = None, trust_remote_code: bool = False,
                 engine_args: dict | None = None):
        from transformers import AutoTokenizer


        self.kind, self.model_dir = kind, str(model_dir)
        self.system = system if system is not None else (QWEN_MATH_SYSTEM if kind == "qwen_outcome" else None)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, trust_remote_code=trust_remote_code)
        self.llm = open_llm(self.model_dir, runner="pooling", trust_remote_code=trust_remote_code,
                            **(engine_args or {}))
        self.fingerprint = stable_hash(folder_fingerprint(self.model_dir), "vllm", self.system)

    def score(self, problems: Sequence[str], solutions: Sequence[str]) -> list[float]:
        from vllm import PoolingParams, TokensPrompt

        texts = [rm_text(self.tokenizer, p, s, self.system) for p, s in zip(problems, solutions)]
        prompts = [TokensPrompt(prompt_token_ids=ids)
                   for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        if self.kind == "qwen_outcome":
            outs = self.llm.encode(prompts, pooling_task="token_classify", use_tqdm=False)
            return [float(o.outputs.data.reshape(len(p["prompt_token_ids"]), -1)[-1, 0]) for o, p in zip(outs, prompts)]
        outs = self.llm.classify(prompts, pooling_params=PoolingParams(use_activation=False), use_tqdm=False)
        return [float(o.outputs.probs[0]) for o in outs]


def open_reward_model(kind: str, model_dir: str | Path, batch_size: int = 8, trust_remote_code: bool = False,
                      aggregation: str = "min", system: str | None = None, max_batch_tokens: int = 16384,
                      backend: str = "transformers", engine_args: dict | None = None):
    if backend == "vllm":
        if kind not in VLLMRewardModel.KINDS:
            raise ValueError(f"reward model kind {kind!r} has no vLLM path (vLLM scores {VLLMRewardModel.KINDS}): "
                             "use backend: transformers for it")
        return VLLMRewardModel(kind, model_dir, system=system, trust_remote_code=trust_remote_code,
                               engine_args=engine_args)
    common = dict(batch_size=batch_size, trust_remote_code=trust_remote_code, system=system,
                  max_batch_tokens=max_batch_tokens)
    if kind in ("synthetic", "sequence_classifier"):
        return SequenceClassifierRM(model_dir, **common)
    if kind == "qwen_outcome":
        return OutcomeRM(model_dir, **common)
    if kind == "process":
        return ProcessRM(model_dir, aggregation=aggregation, **common)
    if kind == "nemotron":
        return NemotronRM(model_dir, **common)
    raise ValueError(f"unknown reward model kind {kind!r}")


def open_study_reward_model(rm, path: str | None):
    """The scorer for one study reward model entry (study.RewardModel) resolved to `path` (none for the world's
    symbolic process RM)."""
    if rm.kind == "symbolic_process":
        return SymbolicProcessRM(error_scale=rm.error_scale, verifier=rm.verifier)
    return open_reward_model(rm.kind, path, batch_size=rm.batch_size, trust_remote_code=rm.trust_remote_code,
                             aggregation=rm.aggregation, system=rm.system, max_batch_tokens=rm.max_batch_tokens,
                             backend=rm.backend, engine_args=rm.engine.engine_args())


def cached_scores(scorer, cache_dir: Path, problems: Sequence[str], solutions: Sequence[str], progress=None,
                  label: str = "rewards") -> list[float]:
    """Scores through the content-addressed cache (scorer fingerprint + problem + solution): a re-run, or the
    same text scored for another asset, costs nothing."""
    problems, solutions = list(problems), list(solutions)
    keys = [stable_hash("reward", scorer.fingerprint, p, c) for p, c in zip(problems, solutions)]
    with ResponseCache(cache_dir, "rm-" + scorer.fingerprint[:16]) as cache:
        return cached_chunks(cache, keys, lambda idx: scorer.score([problems[i] for i in idx],
                                                                   [solutions[i] for i in idx]),
                             encode=lambda v: {"score": v}, decode=lambda h: h["score"], progress=progress,
                             label=label)


def score_traces(reward_models, resolved: dict, cache_dir: Path, family: str, traces: pd.DataFrame,
                 progress=None, label: str = "") -> pd.DataFrame:
    """Every study RM's score of every (problem, completion) row of `traces`, through the cache. Long format:
    model_family, problem_id, reward_model, score (RMs in study order). `resolved`: the reward_model asset's
    value (each RM's folder)."""
    frames = []
    for rm in reward_models:
        scorer = open_study_reward_model(rm, resolved[rm.name]["path"])
        scores = cached_scores(scorer, cache_dir, traces["problem"], traces["completion"], progress=progress,
                               label=f"{label} {rm.name} rewards".strip())
        frames.append(pd.DataFrame({"model_family": family, "problem_id": traces["problem_id"].values,
                                    "reward_model": rm.name, "score": scores}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=SCORE_COLUMNS)
