"""How far a variant trace sits from the native one: information atoms kept, and edit distance."""

from __future__ import annotations

import re

from rapidfuzz.distance import Levenshtein

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
    """Levenshtein distance (rapidfuzz's C++ bit-parallel kernel: ~0.1 ms per 1,500-character pair, against
    ~40 ms for a numpy row loop; 34K rewrites x 4 variants per family at paper scale)."""
    return Levenshtein.distance(a, b)


def normalized_edit_distance(a: str, b: str) -> float:
    """Edit distance divided by the longer length: 0 identical, 1 nothing in common."""
    longest = max(len(a), len(b))
    return edit_distance(a, b) / longest if longest else 0.0
