"""How far a variant trace sits from the native one: information atoms kept, and edit distance."""

from __future__ import annotations

import re

import numpy as np

_NUM = r"-?\d+(?:\.\d+)?"
_OPS = {"+": "+", "-": "-", "\\times": "*", "*": "*", "×": "*", "\\cdot": "*", "\\div": "/", "/": "/", "÷": "/"}
_EQ = re.compile(rf"({_NUM})\s*(\+|-|\\times|\*|×|\\cdot|\\div|/|÷)\s*({_NUM})\s*=\s*({_NUM})")


def information_atoms(text: str) -> set[str]:
    """Equations (normalised: 'a*b=r') and the numeric facts (every number) a trace states."""
    atoms = {f"eq:{a}{_OPS[op]}{b}={r}" for a, op, b, r in _EQ.findall(text)}
    atoms |= {f"num:{n}" for n in re.findall(_NUM, text)}
    return atoms


def semantic_preservation(native: str, variant: str) -> float:
    """Share of the native trace's information atoms the variant keeps (1.0 when native states none)."""
    src = information_atoms(native)
    if not src:
        return 1.0
    return len(src & information_atoms(variant)) / len(src)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance, one numpy pass per row (the left-to-right dependency via a running min)."""
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    bb = np.frombuffer(b.encode("utf-32-le"), dtype=np.uint32)
    prev = np.arange(len(b) + 1, dtype=np.int64)
    idx = np.arange(len(b) + 1, dtype=np.int64)
    for i, ch in enumerate(a, start=1):
        cost = (bb != ord(ch)).astype(np.int64)
        tmp = np.empty_like(prev)
        tmp[0] = i
        tmp[1:] = np.minimum(prev[1:] + 1, prev[:-1] + cost)
        prev = np.minimum.accumulate(tmp - idx) + idx
    return int(prev[-1])


def normalized_edit_distance(a: str, b: str) -> float:
    """Edit distance divided by the longer length: 0 identical, 1 nothing in common."""
    longest = max(len(a), len(b))
    return edit_distance(a, b) / longest if longest else 0.0
