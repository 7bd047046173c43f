"""Final-answer extraction from untrusted model text: pure string scanning, never evaluation.

Order of preference: the last \\boxed{...} (nested braces matched by hand), then
an explicit marker ("The answer is", "Final answer:", "Answer:", "####"), the
markers the synthetic families and the symbolic Oracle use among them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Answers longer than this are never returned whole; the verifier rejects them anyway.
_SCAN_LIMIT = 1_000_000

_MARKERS = [
    re.compile(r"(?:the\s+)?final\s+answer\s*(?:is|:)\s*(?P<ans>[^\n]{1,2000})", re.IGNORECASE),
    re.compile(r"the\s+answer\s+is\s*:?\s*(?P<ans>[^\n]{1,2000})", re.IGNORECASE),
    re.compile(r"(?:^|\n)\s*(?:answer|result)\s*[:=]\s*(?P<ans>[^\n]{1,2000})", re.IGNORECASE),
    re.compile(r"(?:^|\n)\s*####\s*(?P<ans>[^\n]{1,2000})"),
    re.compile(r"=>\s*(?P<ans>[^\n]{1,2000})\s*$"),
]


@dataclass(frozen=True)
class Extraction:
    answer: str | None
    method: str  # "boxed" | "marker" | "none"


def clean_text(text: object) -> str:
    """Any input -> valid UTF-8 str: bytes are decoded with replacement, lone surrogates replaced."""
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    elif not isinstance(text, str):
        text = str(text)
    return text.encode("utf-8", errors="replace").decode("utf-8").replace("\x00", "")


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} or \\fbox{...}, braces balanced; None if unterminated."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    for start in reversed(starts):
        depth = 1
        i = start
        while i < len(text):
            c = text[i]
            if c == "\\" and i + 1 < len(text) and text[i + 1] in "{}":
                i += 2
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i]
            i += 1
    return None


def normalize_answer(ans: str) -> str:
    """Strip what is presentation, not value: math delimiters, trailing punctuation, thousands commas."""
    s = ans.strip()
    for _ in range(3):
        before = s
        s = s.strip().rstrip(".;,").strip()
        for left, right in (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
            if s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
                s = s[len(left) : len(s) - len(right)].strip()
        inner = last_boxed(s) if s.startswith(("\\boxed", "\\fbox")) else None
        if inner is not None:
            s = inner.strip()
        if s == before:
            break
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+", s):
        s = s.replace(",", "")
    return s


def _first_math_span(fragment: str) -> str:
    """'$42$ apples.' -> '42'; '42 apples.' -> '42 apples' (a marker line may carry prose)."""
    m = re.search(r"\$([^$]{1,2000})\$|\\\((.{1,2000}?)\\\)", fragment)
    if m:
        return normalize_answer(m.group(1) or m.group(2))
    return normalize_answer(re.split(r"\.\s", fragment, maxsplit=1)[0])


def extract_answer(text: object) -> Extraction:
    text = clean_text(text)
    boxed = last_boxed(text)
    if boxed is not None and boxed.strip():
        return Extraction(normalize_answer(boxed), "boxed")
    tail = text[-_SCAN_LIMIT:]
    best: tuple[int, str] | None = None
    for pattern in _MARKERS:
        for m in pattern.finditer(tail):
            if best is None or m.start() > best[0]:
                best = (m.start(), m.group("ans"))
    if best is not None:
        ans = _first_math_span(best[1])
        if ans:
            return Extraction(ans, "marker")
    return Extraction(None, "none")


def answer_from_solution(solution: object) -> str | None:
    """Gold answer of a reference solution (NuminaMath-style rows): its last \\boxed{}."""
    boxed = last_boxed(clean_text(solution))
    if boxed is None or not boxed.strip():
        return None
    return normalize_answer(boxed)
