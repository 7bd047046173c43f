"""Final-answer extraction from untrusted model text: pure string scanning, never evaluation.

Order: whichever comes last in the text of (a) the last \\boxed{...} (nested braces matched by hand; boxes
that follow each other with only separators between them are one multi-part answer, "1, 2") and (b) an
explicit marker ("The final answer is", "Final answer:", "The answer is", "Answer:", "Answer $9$", "####"),
a marker inside a marker's text read through (Minerva's "Final Answer: The final answer is 7.78. I hope
it is correct."); then (c) the last $...$, \\(...\\) or \\[...\\] span of the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The version of answer checking (extraction and comparison): every asset that verifies answers carries it
# in its code version, so a change here shows its data as stale (definitions.py).
CHECKER_VERSION = "2"

# Answers longer than this are never returned whole; the verifier rejects them anyway.
_SCAN_LIMIT = 1_000_000

_MARKERS = [
    re.compile(r"(?:the\s+)?final\s+answer\s*(?:is|:)\s*(?P<ans>[^\n]{1,2000})", re.IGNORECASE),
    re.compile(r"the\s+answer\s+is\s*:?\s*(?P<ans>[^\n]{1,2000})", re.IGNORECASE),
    re.compile(r"(?:^|\n)\s*(?:answer|result)\s*[:=]\s*(?P<ans>[^\n]{1,2000})", re.IGNORECASE),
    re.compile(r"(?:^|\n)\s*answer\s+(?P<ans>(?:\$|\\\(|\\\[)[^\n]{1,2000})", re.IGNORECASE),
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


def _boxes(text: str) -> list[tuple[int, int, str]]:
    """Every terminated \\boxed{...} / \\fbox{...}: (start of the command, end after its brace, content)."""
    out = []
    for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, i = 1, m.end()
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
                    out.append((m.start(), i + 1, text[m.end():i]))
                    break
            i += 1
    return out


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} or \\fbox{...}, braces balanced; None if unterminated."""
    boxes = _boxes(text)
    return boxes[-1][2] if boxes else None


_SEPARATOR = re.compile(r"\s*(?:,|;|\band\b|\\text\{\s*(?:,|and)\s*\}|\\quad|\$\s*(?:,|and)?\s*\$)?\s*\$?\s*")


def final_boxes(text: str) -> tuple[int, str] | None:
    """(start, answer) of the last box, joined with the boxes right before it that only separators divide
    from it ("\\boxed{1} and \\boxed{2}" -> "1, 2"): a multi-part answer, never an earlier boxed step."""
    boxes = [b for b in _boxes(text) if b[2].strip()]
    if not boxes:
        return None
    group = [boxes[-1]]
    for prev in reversed(boxes[:-1]):
        between = text[prev[1]:group[0][0]]
        if _SEPARATOR.fullmatch(between) is None:
            break
        group.insert(0, prev)
    return group[0][0], ", ".join(normalize_answer(b[2]) for b in group)


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
    if re.fullmatch(r"-?[1-9]\d{0,2}(,\d{3})+", s):  # 3,000 -> 3000; "0,111" is two numbers, not 111
        s = s.replace(",", "")
    return s


def _first_math_span(fragment: str) -> str:
    """'$42$ apples.' -> '42'; '42 apples.' -> '42 apples' (a marker line may carry prose)."""
    m = re.search(r"\$([^$]{1,2000})\$|\\\((.{1,2000}?)\\\)", fragment)
    if m:
        return normalize_answer(m.group(1) or m.group(2))
    return normalize_answer(re.split(r"\.\s", fragment, maxsplit=1)[0])


def _last_marker(text: str) -> tuple[int, str] | None:
    """(start, text after) of the last answer marker; a marker at the start of that text is read through."""
    best: tuple[int, str] | None = None
    for pattern in _MARKERS:
        for m in pattern.finditer(text):
            if best is None or m.start() > best[0]:
                best = (m.start(), m.group("ans"))
    if best is None:
        return None
    for _ in range(3):  # "Final Answer: The final answer is 7.78." -> "7.78."
        inner = next((m for m in (p.match(best[1].lstrip()) for p in _MARKERS) if m), None)
        if inner is None:
            break
        best = (best[0], inner.group("ans"))
    return best


_MATH_SPAN = re.compile(r"\$\$(.{1,2000}?)\$\$|\$([^$]{1,2000})\$|\\\((.{1,2000}?)\\\)|\\\[(.{1,2000}?)\\\]", re.DOTALL)


def extract_answer(text: object) -> Extraction:
    text = clean_text(text)
    offset = max(0, len(text) - _SCAN_LIMIT)  # markers and spans are looked for in the tail only
    tail = text[offset:]
    boxed, marker = final_boxes(text), _last_marker(tail)
    if marker is not None and (boxed is None or offset + marker[0] > boxed[0]):
        ans = _first_math_span(marker[1])
        if ans:
            return Extraction(ans, "marker")
    if boxed is not None:
        return Extraction(boxed[1], "boxed")
    spans = list(_MATH_SPAN.finditer(tail))
    if spans:
        m = spans[-1]
        ans = normalize_answer(next(g for g in m.groups() if g is not None))
        if ans:
            return Extraction(ans, "math_span")
    return Extraction(None, "none")


def answer_from_solution(solution: object) -> str | None:
    """Gold answer of a reference solution (NuminaMath-style rows): its last \\boxed{} (with the boxes just
    before it when only separators divide them: a multi-part answer)."""
    boxed = final_boxes(clean_text(solution))
    return boxed[1] if boxed is not None and boxed[1] else None
