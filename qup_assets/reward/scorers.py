"""Reward-model backends behind one call: score a batch of (problem, solution) pairs.

- sequence_classifier: Skywork-Reward style, num_labels=1, the logit is the score
- qwen_outcome:        Qwen2.5-Math-RM style, loaded with AutoModel (remote code only if the study allows it)
- process:             Qwen2.5-Math-PRM style, steps joined with a step token, P(positive) per step,
                       aggregated by min, mean or last
Inputs are chat-templated as the model expects (user: problem, assistant: solution), padded on the right.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from qup_assets.backends.fingerprint import folder_fingerprint


def rm_text(tokenizer, problem: str, solution: str) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": problem}, {"role": "assistant", "content": solution}], tokenize=False)
    return f"{problem}\n\n{solution}"


class _Base:
    def __init__(self, model_dir: str | Path, batch_size: int = 8, trust_remote_code: bool = False):
        from transformers import AutoTokenizer

        self.model_dir = str(model_dir)
        self.batch_size = batch_size
        self.trust_remote_code = trust_remote_code
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, trust_remote_code=trust_remote_code)
        self.tokenizer.padding_side = "right"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.fingerprint = folder_fingerprint(self.model_dir)

    def _texts(self, problems: Sequence[str], solutions: Sequence[str]) -> list[str]:
        return [rm_text(self.tokenizer, p, s) for p, s in zip(problems, solutions)]

    def score(self, problems: Sequence[str], solutions: Sequence[str]) -> list[float]:
        import torch

        texts = self._texts(problems, solutions)
        out: list[float] = []
        with torch.inference_mode():
            for lo in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(texts[lo : lo + self.batch_size], return_tensors="pt", padding=True,
                                     truncation=True, max_length=4096, add_special_tokens=False)
                out.extend(self._batch_scores(enc))
        return out


class SequenceClassifierRM(_Base):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        from transformers import AutoModelForSequenceClassification

        self.model = AutoModelForSequenceClassification.from_pretrained(self.model_dir, trust_remote_code=self.trust_remote_code).eval()
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id

    def _batch_scores(self, enc) -> list[float]:
        return self.model(**enc).logits[:, 0].float().tolist()


class OutcomeRM(_Base):
    """AutoModel whose first output is the reward: [B], [B, 1], or per-token [B, T(, 1)] read at the last token."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        from transformers import AutoModel

        self.model = AutoModel.from_pretrained(self.model_dir, trust_remote_code=self.trust_remote_code).eval()

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
    def __init__(self, *a, aggregation: str = "min", step_token: str = "<extra_0>", **k):
        super().__init__(*a, **k)
        from transformers import AutoConfig, AutoModel, AutoModelForTokenClassification

        config = AutoConfig.from_pretrained(self.model_dir, trust_remote_code=self.trust_remote_code)
        archs = config.architectures or []
        cls = AutoModelForTokenClassification if any(a.endswith("ForTokenClassification") for a in archs) else AutoModel
        self.model = cls.from_pretrained(self.model_dir, trust_remote_code=self.trust_remote_code).eval()
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
        return [rm_text(self.tokenizer, p, "".join(s + self.step_token for s in self.split_steps(sol)))
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


def open_reward_model(kind: str, model_dir: str | Path, batch_size: int = 8, trust_remote_code: bool = False,
                      aggregation: str = "min"):
    if kind in ("synthetic", "sequence_classifier"):
        return SequenceClassifierRM(model_dir, batch_size=batch_size, trust_remote_code=trust_remote_code)
    if kind == "qwen_outcome":
        return OutcomeRM(model_dir, batch_size=batch_size, trust_remote_code=trust_remote_code)
    if kind == "process":
        return ProcessRM(model_dir, batch_size=batch_size, trust_remote_code=trust_remote_code, aggregation=aggregation)
    raise ValueError(f"unknown reward model kind {kind!r}")
