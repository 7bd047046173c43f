"""Final-answer extraction from untrusted model text: pure string scanning, never evaluation.

The order, for the default `standard` formats (the study's `verification.answer_formats`):
  1. whichever comes last in the text of
     (a) the last \\boxed{...} / \\fbox{...} (nested braces matched by hand), joined with the boxes just
         before it that only separators or a few words ending in "and" / "," divide from it: one
         multi-part answer ("\\boxed{1} and \\boxed{2}" -> "1, 2"), never an earlier boxed step;
     (b) the last answer marker ("The final answer is", "Final answer:", "The answer is", "Answer:",
         "Answer $9$", "####", or the sentence before Minerva's "I hope it is correct"), a marker inside a
         marker's text read through ("Final Answer: The final answer is 7.78. I hope it is correct.");
         from its sentence: a math span that opens it, else what follows its last " is ", else its last
         math span, else its last number;
  2. a concluding sentence ("Therefore, ... is 12.") after the last math span, read like a marker's;
  3. the last $...$, $$...$$, \\(...\\) or \\[...\\] span of the text.
`boxed` stops after 1(a) (the strict reward functions of RL recipes); `qwen_math` adds, last, the last
number of the text, as Qwen2.5-Math's evaluation does (`use_last_number=True`) for base models that write
no marker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal, get_args

# The version of answer checking (extraction and comparison): every asset that verifies answers carries it
# in its code version, so a change here shows its data as stale (definitions.py).
# 4: a marker sentence that reads like code ("Answer: exec(open('/x/run-4'))") gives no answer, not a digit of it.
CHECKER_VERSION = "4"

# Text that reads like code is not mathematics: a gold answer like it is a broken or poisoned row (rejected
# before parsing), and a marker sentence like it gives no answer.
CODE_LIKE = re.compile(
    r"__\w+|\bimport\s+\w|\b(?:eval|exec|compile|open|getattr|system|popen|input)\s*\(|\blambda\b|"
    r"\b(?:os|sys|subprocess|builtins|shutil)\.\w|;\s*\w+\s*\(|\bdef\s+\w+\s*\(|<\s*script"
)

AnswerFormats = Literal["boxed", "standard", "qwen_math"]
ANSWER_FORMATS: tuple[str, ...] = get_args(AnswerFormats)

# Markers and spans are looked for in the last million characters only.
_SCAN_LIMIT = 1_000_000

_MARKERS = [
    re.compile(r"(?:the\s+)?final\s+answer\s*(?:is|:)\s*(?P<ans>.{1,2000})", re.IGNORECASE | re.DOTALL),
    re.compile(r"the\s+answer\s+is\s*:?\s*(?P<ans>.{1,2000})", re.IGNORECASE | re.DOTALL),
    re.compile(r"(?:^|\n)\s*\**(?:answer|result)\**\s*[:=]\s*(?P<ans>.{1,2000})", re.IGNORECASE | re.DOTALL),
    re.compile(r"(?:^|\n)\s*answer\s+(?P<ans>(?:\$|\\\(|\\\[).{1,2000})", re.IGNORECASE | re.DOTALL),
    re.compile(r"(?:^|\n)\s*####\s*(?P<ans>[^\n]{1,2000})"),
    re.compile(r"=>\s*(?P<ans>[^\n]{1,2000})\s*$"),
]

# $$...$$, $...$ (an escaped \$ inside is part of it), \(...\), \[...\]; inline math stays on one line
_MATH_SPAN = re.compile(
    r"\$\$(?P<dd>.{1,2000}?)\$\$|(?<!\\)\$(?P<d>(?:\\\$|[^$\n]){1,2000}?)(?<!\\)\$|\\\((?P<p>[^\n]{1,2000}?)\\\)"
    r"|\\\[(?P<b>.{1,2000}?)\\\]",
    re.DOTALL,
)
# A concluding sentence ("Therefore, the error increases by 100%."): read like a marker's sentence, but only
# when no box or marker answers and it comes after the last math span.
_CONCLUSION = re.compile(r"(?:^|(?<=[.!?\n$]))\s*(?:therefore|thus|hence|so)\b,?\s+(?P<ans>[^\n]{1,600})", re.IGNORECASE)
# A number in prose: thousands commas, a decimal point or comma ("2,74 $"), a fraction; a unit may follow.
_NUMBER = re.compile(
    r"(?:(?<![\w.,])-?\d{1,300}(?:,\d{3}(?!\d))*(?:[.,]\d{1,300})?(?:\s*/\s*\d{1,300})?(?!\d)|(?<![\w.])-?\.\d{1,300})"
    r"(?:\s?\\?%)?"
)
# What may follow a number as its unit ("1,000.99m²", "12 cm", "3 €"); one ASCII letter ("2x") is algebra.
_UNIT = re.compile(r"\s*(?:[A-Za-z]{2,6}[²³]?|[A-Za-z]?[²³]|[€£¥°])")


@dataclass(frozen=True)
class Extraction:
    answer: str | None
    method: str  # "boxed" | "marker" | "conclusion" | "math_span" | "last_number" | "none"


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


_LAYOUT = re.compile(r"\\q?quad|\\[,;:! ]|\$|\\[()\[\]]|\\text\s*\{([^{}]{0,40})\}")
# What may divide the parts of one multi-part answer: nothing, a separator, or a few words ending in one
# ("papers and", "for part (a) and"); "no no no" or "so the answer is" divide two separate answers.
_JOINER = re.compile(
    r"(?:(?:(?:[A-Za-z()]{1,12}\s+){0,4}(?:and|or|,|;)|,|;)(?:\s*[A-Za-z](?:_\{?\w{1,3}\}?)?\s*=)?)?", re.IGNORECASE
)


def _joins(between: str) -> bool:
    if len(between) > 80:
        return False
    plain = _LAYOUT.sub(lambda m: f" {m.group(1) or ''} ", between)
    plain = re.sub(r"\s+", " ", plain).strip().rstrip(".")
    plain = plain[:-1].strip() if plain.endswith((",", ";")) and len(plain) > 1 else plain
    return _JOINER.fullmatch(plain) is not None


def final_boxes(text: str) -> tuple[int, str] | None:
    """(start, answer) of the last box, joined with the boxes right before it that only separators divide
    from it ("\\boxed{1} and \\boxed{2}" -> "1, 2"): a multi-part answer, never an earlier boxed step."""
    boxes = [b for b in _boxes(text) if b[2].strip()]
    if not boxes:
        return None
    group = [boxes[-1]]
    for prev in reversed(boxes[:-1]):
        if not _joins(text[prev[1]:group[0][0]]):
            break
        group.insert(0, prev)
    return group[0][0], ", ".join(normalize_answer(b[2]) for b in group)


_REPEATING = re.compile(r"(?<![\d.])(-?)(\d{0,12})\.(\d{0,12})\\overline\s*\{(\d{1,12})\}")


def _repeating_to_fraction(m: re.Match) -> str:
    """0.\\overline{3} -> \\frac{1}{3}, 0.1\\overline{6} -> \\frac{1}{6}: exact arithmetic on the digits."""
    sign, whole, fixed, rep = m.groups()
    value = Fraction(int(whole or 0)) + Fraction(int(fixed or 0), 10 ** len(fixed)) + Fraction(
        int(rep), (10 ** len(rep) - 1) * 10 ** len(fixed))
    if sign:
        value = -value
    return str(value.numerator) if value.denominator == 1 else f"\\frac{{{value.numerator}}}{{{value.denominator}}}"


def normalize_answer(ans: str) -> str:
    """Strip what is presentation, not value: math delimiters, trailing punctuation, thousands commas;
    write a repeating decimal as the fraction it is."""
    s = ans.strip()
    for _ in range(3):
        before = s
        s = s.strip().rstrip(".;,").strip()
        for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
            if s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
                s = s[len(left) : len(s) - len(right)].strip()
        inner = last_boxed(s) if s.startswith(("\\boxed", "\\fbox")) else None
        if inner is not None and s.endswith("}"):
            s = inner.strip()
        if s == before:
            break
    if re.fullmatch(r"-?[1-9]\d{0,2}(?:(,\d{3})+|( \d{3})+)(\.\d+)?", s):  # 3,000.5 and 3 000 -> 3000.5
        s = s.replace(",", "").replace(" ", "")
    return _REPEATING.sub(_repeating_to_fraction, s)


def _span_content(m: re.Match) -> str:
    return next(g for g in m.group("dd", "d", "p", "b") if g is not None)


def _sentence(fragment: str) -> str:
    """The fragment up to the end of its sentence ("7.78. I hope it is correct." -> "7.78")."""
    return re.split(r"\n|\.\s|\.$|<\|", fragment, maxsplit=1)[0]


def _marker_answer(fragment: str) -> str:
    """The answer in the text that follows a marker (see the module docstring for the order)."""
    frag = fragment.lstrip(" \t:*\"'")
    m = _MATH_SPAN.match(frag)
    if m:  # the span that opens it, with the spans right after it that only joiners divide ("$12$ and $13$")
        group = [m]
        for nxt in _MATH_SPAN.finditer(frag, m.end()):
            if not _joins(frag[group[-1].end():nxt.start()]):
                break
            group.append(nxt)
        return ", ".join(normalize_answer(_span_content(g)) for g in group)
    sentence = _sentence(frag)
    if " is " in sentence:  # "The volume of $ABCDEFGH$ is 120" -> "120"
        return _marker_answer(sentence.rsplit(" is ", 1)[1])
    spans = list(_MATH_SPAN.finditer(sentence))
    if spans:  # the last span, with the spans just before it that only joiners divide ("$12$ and $13$")
        group = [spans[-1]]
        for prev in reversed(spans[:-1]):
            if not _joins(sentence[prev.end():group[0].start()]):
                break
            group.insert(0, prev)
        return ", ".join(normalize_answer(_span_content(m)) for m in group)
    if CODE_LIKE.search(sentence):  # "Answer: exec(open('/x/run-4'))" is no answer, not "4"
        return ""
    if re.search(r"[A-Za-z]{3,}", sentence.replace("\\", " ")):  # prose: "Sphere 3 hours ago" -> "3"
        numbers = _NUMBER.findall(sentence)
        if numbers:
            return normalize_answer(numbers[-1].replace(" ", ""))
    m = _NUMBER.match(sentence.strip())
    if m and _UNIT.fullmatch(sentence.strip()[m.end():]):
        return normalize_answer(m.group(0))
    answer = normalize_answer(sentence)
    return answer if re.search(r"\w", answer) else ""  # a stray "$" is no answer


def _last_marker(text: str) -> tuple[int, str] | None:
    """(start, text after) of the last answer marker; a marker at the start of that text is read through."""
    best: tuple[int, str] | None = None
    for pattern in _MARKERS:
        for m in pattern.finditer(text):
            if best is None or m.start() > best[0]:
                best = (m.start(), m.group("ans"))
    hope = text.rfind("I hope it is correct")  # Minerva's closing line: the sentence before it is the answer
    if hope > 0:
        window = max(0, hope - 600)
        before = text[window:hope].rstrip()
        starts = [m.end() for m in re.finditer(r"(?:[.!?](?=\s)|\n)\s*", before[:-1])]
        start = window + (starts[-1] if starts else 0)
        if best is None or start > best[0]:
            best = (start, text[start:hope])
    if best is None:
        return None
    for _ in range(3):  # "Final Answer: The final answer is 7.78." -> "7.78."
        inner = next((m for m in (p.match(best[1].lstrip(" \t:*")) for p in _MARKERS) if m), None)
        if inner is None:
            break
        best = (best[0], inner.group("ans"))
    return best


def extract_answer(text: object, formats: AnswerFormats = "standard") -> Extraction:
    text = clean_text(text)
    offset = max(0, len(text) - _SCAN_LIMIT)
    tail = text[offset:]
    boxed = final_boxes(text)
    if formats == "boxed":
        return Extraction(boxed[1], "boxed") if boxed else Extraction(None, "none")
    marker = _last_marker(tail)
    if marker is not None and (boxed is None or offset + marker[0] > boxed[0]):
        ans = _marker_answer(marker[1])
        if ans:
            return Extraction(ans, "marker")
    if boxed is not None:
        return Extraction(boxed[1], "boxed")
    spans = list(_MATH_SPAN.finditer(tail))
    conclusions = [m for m in _CONCLUSION.finditer(tail) if not spans or m.start() >= spans[-1].end()]
    if conclusions and _NUMBER.search(conclusions[-1].group("ans")):
        ans = _marker_answer(conclusions[-1].group("ans"))
        if ans:
            return Extraction(ans, "conclusion")
    if formats == "qwen_math" and marker is None:  # a bare expression is the answer; else the last number, unless a span follows it
        bare = tail.strip()
        if len(bare) <= 80 and not spans and not re.search(r"(?<!\\)\b[A-Za-z]{3,}", bare):
            return Extraction(_decimal_comma(normalize_answer(bare)), "last_number")
        after = tail[spans[-1].end():] if spans else tail
        numbers = _NUMBER.findall(after)
        if numbers:
            return Extraction(_decimal_comma(normalize_answer(numbers[-1].replace(" ", ""))), "last_number")
    if spans:
        ans = normalize_answer(_span_content(spans[-1]))
        if ans:
            return Extraction(ans, "math_span")
    return Extraction(None, "none")


def answer_from_solution(solution: object) -> str | None:
    """Gold answer of a reference solution (NuminaMath-style rows): its last \\boxed{} (with the boxes just
    before it when only separators divide them: a multi-part answer)."""
    boxed = final_boxes(clean_text(solution))
    return boxed[1] if boxed is not None and boxed[1] else None


def gold_from_cell(cell: str) -> str | None:
    """The gold answer an answer cell holds: a cell with boxes is its final boxes (a gold "\\boxed{1}\\boxed{2}"
    is "1, 2", never "2"), a worked solution is what extraction finds in it, anything else is the answer."""
    text = clean_text(cell).strip()
    if not text:
        return None
    boxed = final_boxes(text)
    if boxed is not None:
        return boxed[1] or None
    if len(re.findall(r"(?<!\\)\b[A-Za-z]{2,}\b", text)) >= 8:  # prose: a worked solution, not an answer
        return extract_answer(text).answer
    answer = normalize_answer(text)
    return (answer if re.search(r"\$|\\[(\[]", text) else _decimal_comma(answer)) or None


def _decimal_comma(number: str) -> str:
    """A bare 0,111 or 1,22 (no thousands grouping) is a decimal comma, as math-verify reads a bare number;
    a multi-part answer is written with a space ("2, 3") or in math delimiters ("$2,3$" is a set)."""
    return number.replace(",", ".") if re.fullmatch(r"-?\d+,\d+", number) else number
