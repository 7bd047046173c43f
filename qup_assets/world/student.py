"""The synthetic world's student recipe: a real HF tokenizer and a tiny Qwen2 or Llama model.

The tokenizer is byte-level BPE with single-digit splitting (as Qwen and Llama 3 do
for numbers), with pad and eos tokens and a chat template of the family's own
(ChatML for the Qwen-like family, Llama-3 headers for the Llama-like one), so it
loads with AutoTokenizer and `apply_chat_template` works exactly as for a real model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

from qup_assets.backends.base import Request, SamplingParams
from qup_assets.backends.prompting import render_prompt
from qup_assets.backends.transformers_backend import TransformersBackend
from qup_assets.common import problem_id, publish_dir, stable_hash
from qup_assets.study import Prompt
from qup_assets.training.pretrain import encode_examples, pretrain
from qup_assets.world.generator import generate, textbook_solution
from qup_assets.world.mistakes import STUDENT_MISTAKES, wrong_chain
from qup_assets.world.shipped import code_digest, copy_model, excluded_digest, find
from qup_assets.world.styles import STYLES, get_style

# The modules whose code decides a synthetic student's weights (a change to any of them needs `qup world build`).
STUDENT_CODE = ("qup_assets.world.generator", "qup_assets.world.styles", "qup_assets.world.mistakes",
                "qup_assets.world.student", "qup_assets.training.pretrain", "qup_assets.backends.prompting")

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAMA3 = (
    "{{ '<|begin_of_text|>' }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


@dataclass(frozen=True)
class ChatFormat:
    template: str
    eos: str
    pad: str
    specials: tuple[str, ...]


CHAT_FORMATS = {
    "qwen2": ChatFormat(CHATML, eos="<|im_end|>", pad="<|endoftext|>", specials=("<|endoftext|>", "<|im_start|>", "<|im_end|>")),
    "llama": ChatFormat(
        LLAMA3, eos="<|eot_id|>", pad="<|finetune_right_pad_id|>",
        specials=("<|finetune_right_pad_id|>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    ),
}


def build_tokenizer(texts: Iterable[str], architecture: str, vocab_size: int = 640):
    """Train a byte-level BPE on `texts` and wrap it as a PreTrainedTokenizerFast with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    fmt = CHAT_FORMATS[architecture]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(fmt.specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=fmt.eos,
        pad_token=fmt.pad,
        additional_special_tokens=[t for t in fmt.specials if t not in (fmt.eos, fmt.pad)],
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = fmt.template
    return fast


def build_model(architecture: str, tokenizer, hidden_size: int, num_layers: int, seed: int, max_positions: int = 1024):
    """A freshly initialised Qwen2ForCausalLM or LlamaForCausalLM sized for 2 CPU cores."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    heads = max(1, hidden_size // 32)
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 3,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
        rms_norm_eps=1e-6,
    )
    torch.manual_seed(seed)
    if architecture == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common))
    if architecture == "llama":
        return LlamaForCausalLM(LlamaConfig(**common))
    raise ValueError(f"unknown architecture {architecture!r} (qwen2 or llama)")


def expected_parameters(architecture: str, hidden_size: int, num_layers: int, vocab_size: int = 640) -> int:
    """build_model's parameter count, by arithmetic (no torch), for `qup plan` before the student exists: tied
    embeddings, per layer q/k/v/o (Qwen2 adds q/k/v biases), a 3x SwiGLU MLP and two RMSNorms, a final norm."""
    h = hidden_size
    layer = 4 * h * h + 3 * h * (3 * h) + 2 * h + (3 * h if architecture == "qwen2" else 0)
    return vocab_size * h + num_layers * layer + h


# ---------------------------------------------------------------- building a synthetic student


@dataclass
class BuiltStudent:
    path: str
    parameters: int
    tokens_seen: int
    steps: int
    seconds: float
    tokens_per_second: float
    loss_curve: list
    heldout_greedy_accuracy: float
    heldout_problems: int
    heldout_examples: list


def pretrain_device() -> str:
    """Where a synthetic student is pretrained: the GPU its step was given (a GPU study), else the CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def build_synthetic_student(
    spec,
    family: str,
    corpus_knobs: dict,
    out_dir,
    exclude_ids: set[str],
    verifier,
    log=print,
    heldout: int = 100,
) -> BuiltStudent:
    """Tokenizer + model trained from scratch on problems solved in the family's style, saved as an HF folder.

    The corpus never contains a pool or benchmark problem (`exclude_ids`), so the student
    meets the pool for the first time in rejection sampling.
    """
    import random

    seed = int(stable_hash("pretrain-corpus", family, spec.seed)[:8], 16)
    want = spec.pretrain_problems + heldout
    problems = [p for p in generate(int(want * 1.3) + 50, seed, **corpus_knobs) if problem_id(p.problem) not in exclude_ids]
    seen, corpus = set(), []
    for p in problems:
        if p.problem not in seen:
            seen.add(p.problem)
            corpus.append(p)
    corpus = corpus[:want]
    style = get_style(spec.style)
    # Like a real pretraining corpus, a small share of solutions is written by others (other students,
    # the Oracle, textbooks): the student has seen those styles, but rarely. And like the web, some
    # solutions in its own style are wrong (`wrong_solution_share`: forum answers, other students' work):
    # the base model learns those habits too, which is what rejection sampling later filters out.
    # Solutions are written with the writer's harmless variety (styles.py), drawn per solution and step.
    # Like a real pretraining corpus, a small share is written by others (other students, the Oracle,
    # textbooks): the student has seen those styles, but rarely. And like the web, some solutions in its
    # own style are wrong (`wrong_solution_share`: forum answers, other students' work), with the mistakes
    # of someone who reasons (STUDENT_MISTAKES: the answer follows from the wrong work); the base model
    # learns those habits too, which is what rejection sampling later filters out.
    others = [s for s in STYLES.values() if s.name != spec.style]
    mix = random.Random(seed)
    completions = []
    for p in corpus:
        r = mix.random()
        if r < spec.foreign_style_share * 0.75:
            completions.append(mix.choice(others).render(p.program, p.items, mix))
        elif r < spec.foreign_style_share:
            completions.append(textbook_solution(p.program, p.name, p.items))
        elif spec.wrong_solution_share and mix.random() < spec.wrong_solution_share:
            start, steps, answer = wrong_chain(p.program, mix.choice(STUDENT_MISTAKES), mix)
            completions.append(style.render_steps(steps, answer, p.items, mix))
        else:
            completions.append(style.render(p.program, p.items, mix))
    # The tokenizer sees every writer's style (as a real tokenizer sees the web); the model only its own.
    tokenizer_texts = [p.problem for p in corpus] + completions + [
        s.render(p.program, p.items, mix) for p in corpus[:500] for s in STYLES.values() if s.name != spec.style
    ] + [textbook_solution(p.program, p.name, p.items) for p in corpus[:500]]
    tokenizer = build_tokenizer(tokenizer_texts, spec.architecture)
    prompt_cfg = Prompt()
    prompts = [render_prompt(tokenizer, prompt_cfg, p.problem) for p in corpus]
    n_train = len(corpus) - heldout
    examples = encode_examples(tokenizer, prompts[:n_train], completions[:n_train], max_len=1024)
    model = build_model(spec.architecture, tokenizer, spec.hidden_size, spec.num_layers, spec.seed)
    params = sum(p.numel() for p in model.parameters())
    model.to(pretrain_device())
    log(f"{family}: {spec.architecture} with {params:,} parameters, {n_train} training problems in style {spec.style!r}"
        f" on {pretrain_device()}")
    stats = pretrain(model, tokenizer, examples, spec.pretrain_steps, spec.pretrain_batch_size, spec.pretrain_lr, spec.seed, log)

    out_dir = Path(out_dir)
    def save(tmp):
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)

    publish_dir(save, out_dir)

    lm = TransformersBackend(out_dir)
    held = corpus[n_train:]
    outs = lm.sample([Request(p) for p in prompts[n_train:]], SamplingParams(temperature=0.0, max_tokens=256))
    verdicts = verifier.verify_many([(p.answer, o.text) for p, o in zip(held, outs)])
    acc = sum(v.correct for v in verdicts) / max(1, len(verdicts))
    log(f"{family}: held-out greedy accuracy {acc:.1%} on {len(held)} problems")
    examples_out = [
        {"problem": p.problem, "answer": p.answer, "completion": o.text, "verdict": v.verdict}
        for p, o, v in list(zip(held, outs, verdicts))[:5]
    ]
    return BuiltStudent(str(out_dir), params, stats.tokens_seen, stats.steps, stats.seconds, stats.tokens_per_second,
                        stats.loss_curve, acc, len(held), examples_out)


# ---------------------------------------------------------------- shipped students (world/shipped.py)


def heldout_problems(spec) -> int:
    """Corpus problems held out of pretraining to measure the built student's greedy accuracy."""
    return min(100, max(20, spec.pretrain_problems // 10))


def student_recipe(spec, family: str, corpus_knobs: dict, exclude_ids: set[str]) -> dict:
    """Everything that decides the student's weights: what a shipped folder must have been built from."""
    return {"family": family, "spec": spec.model_dump(mode="json"), "corpus": dict(corpus_knobs),
            "heldout": heldout_problems(spec), "prompt": Prompt().model_dump(mode="json"),
            "excluded_problems": excluded_digest(exclude_ids), "world_code": code_digest(STUDENT_CODE)}


def build_record(built: BuiltStudent) -> dict:
    """What base_model shows of a build, whether it ran in this run or when the folder was shipped."""
    return {k: v for k, v in asdict(built).items() if k != "path"}


def provide_student(study: str, family: str, spec, corpus_knobs: dict, exclude_ids: set[str], out_dir: Path,
                    verifier, log: Callable[[str], None] = print, warn: Callable[[str], None] = print) -> tuple[dict, str]:
    """The family's student in `out_dir`: the shipped folder when its recipe matches, else pretrained here.
    Returns (the build's record, where the student came from)."""
    recipe = student_recipe(spec, family, corpus_knobs, exclude_ids)
    shipped, why = find(study, "students", family, recipe)
    if shipped:
        copy_model(shipped, Path(out_dir))
        log(f"{family}: the shipped student {shipped.folder} (its recipe matches; built in "
            f"{shipped.record.get('seconds', 0):.0f} s, not repeated here)")
        return shipped.record, shipped.origin
    if why:
        warn(why)
    built = build_synthetic_student(spec, family, corpus_knobs, out_dir, exclude_ids, verifier, log=log,
                                    heldout=recipe["heldout"])
    return build_record(built), "pretrained in this run"

