"""Resolve a Hugging Face model offline (a local folder or the local HF cache) and describe it cheaply."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from qup_assets.backends.base import BackendError
from qup_assets.backends.fingerprint import folder_fingerprint


def resolve_model(ref: str, revision: str | None = None) -> Path:
    """A local folder as is; otherwise the snapshot in the local HF cache. Never downloads."""
    p = Path(ref).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise BackendError(f"{p} is a folder but not a Hugging Face model folder (no config.json)")
        return p.resolve()
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(ref, revision=revision, local_files_only=True))
    except Exception as e:
        rev = f" --revision {revision}" if revision else ""
        raise BackendError(
            f"model {ref!r} is not available offline ({type(e).__name__}). Weights are never downloaded at run time: "
            f"on a machine with internet run `hf download {ref}{rev}` (it lands in the HF cache, "
            f"HF_HOME or ~/.cache/huggingface), copy that cache here, or set the family's student.model to a "
            f"local model folder. Gated models (meta-llama/*) need `hf auth login` and the licence accepted on "
            f"huggingface.co first."
        ) from None


def _safetensors_params(path: Path) -> int:
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")


def model_size(folder: Path) -> tuple[str, int | None]:
    """(lineage, parameters) of a model folder from config.json's model_type and the safetensors headers: the
    size axis of the study, read, never typed. Parameters None: the folder has no safetensors weights."""
    config = json.loads((Path(folder) / "config.json").read_text())
    weights = sorted(Path(folder).glob("*.safetensors"))
    return str(config.get("model_type") or "unknown"), (sum(_safetensors_params(w) for w in weights) if weights else None)


# Files one of which every HF tokenizer folder has (fast tokenizers, SentencePiece, BPE vocabularies).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")


def describe_model(folder: Path) -> dict:
    """Name, revision, content fingerprint, lineage (config model_type), parameter count (the safetensors
    headers), dtype and chat template, without loading weights.
    A folder without config.json or without a tokenizer is a BackendError that names the missing files."""
    if not (folder / "config.json").is_file():
        raise BackendError(f"model folder {folder} has no config.json: not a Hugging Face model folder")
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise BackendError(f"model folder {folder} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}): copy the "
                           "model's tokenizer files next to its weights, or download the whole model again")
    config = json.loads((folder / "config.json").read_text())
    tok_cfg_path = folder / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_path.read_text()) if tok_cfg_path.is_file() else {}
    template = tok_cfg.get("chat_template")
    if template is None and (folder / "chat_template.jinja").is_file():
        template = (folder / "chat_template.jinja").read_text()
    lineage, parameters = model_size(folder)
    revision = folder.name if folder.parent.name == "snapshots" else None
    return {
        "path": str(folder),
        "architecture": (config.get("architectures") or ["?"])[0],
        "lineage": lineage,
        "revision": revision,
        "fingerprint": folder_fingerprint(folder),
        "parameters": parameters,
        "dtype": str(config.get("torch_dtype") or config.get("dtype") or "unknown"),
        "chat_template": template,
    }
