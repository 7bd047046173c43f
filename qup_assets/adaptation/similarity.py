"""How far a variant trace sits from the native one: the quantities it still establishes, and edit distance.

Semantic preservation is the share of the native trace's *information atoms* (the quantities its steps
establish) that the variant still establishes. Notation is not information: `$ 12 + 5 = 17 $`,
`\\(5+12=17\\)` and `12 + 5 = 17 apples` are one atom; `12 + 5 = 18` is another, whatever numbers it reuses.
Model text is untrusted, so atoms are read, never evaluated: a small tokenizer and a recursive-descent parser
with `Fraction` arithmetic, bounded in input length, side length and nesting; junk yields no atoms.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

from rapidfuzz.distance import Levenshtein

from qup_assets.mathcore.extract import extract_answer

_MAX_CHARS = 100_000  # equations are read in the first 100K characters (the answer: extract_answer's window)
_MAX_SIDE = 64  # tokens one side of an equation may hold
_MAX_DEPTH = 40  # nesting (brackets, signs) one side may hold
_MAX_EQS = 500  # equations read per trace (a real one has tens)
_NUM = r"[0-9]{1,3}(?:,[0-9]{3}){1,8}(?![0-9])(?:\.[0-9]{1,30})?|[0-9]{1,30}(?:\.[0-9]{1,30})?"  # 1,000 and 2.5
_TOKEN = re.compile(rf"(?P<n>{_NUM})|(?P<cmd>\\[A-Za-z]+|\\.?)|(?P<w>[A-Za-z]+)|(?P<sp>[ \t\r\f\v&]+)|(?P<ch>.)",
                    re.DOTALL)
_OPS = {"+": "+", "-": "-", "\u2212": "-", "*": "*", "×": "*", "·": "*", "\\times": "*", "\\cdot": "*",
        "/": "/", "÷": "/", "\\div": "/"}
_PAIRS = {"(": ")", "{": "}", "[": "]"}
_KINDS = {"=": "=", "(": "(", "{": "(", "[": "(", ")": ")", "}": ")", "]": ")", "\\frac": "f", "\\dfrac": "f",
          "\\tfrac": "f"}  # kinds: n number, v variable, o operator, = ( ) f \frac, x poison, b break
_SKIP = {"\\boxed", "\\left", "\\right", "\\displaystyle", "\\,", "\\;", "\\:", "\\!", "\\ ", "\\bigl", "\\bigr"}
_BREAK_CMDS = {"\\(", "\\)", "\\[", "\\]", "\\$", "\\\\", "\\", "\\text", "\\textbf", "\\mathrm", "\\mbox",
               "\\quad", "\\qquad", "\\implies", "\\Rightarrow", "\\rightarrow", "\\to", "\\therefore"}
_POISON = set("^_%<>|~'\"≈≠≤≥√π") | {"\\%"}  # a side touching one of these (or \sqrt, \pi...) is no arithmetic
_BRK = ("b", "")
_ARITH = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": lambda a, b: a / b if b else None}
_GIVEN = re.compile(rf"\b(?:start(?:s|ed|ing)?|begin(?:s|ning)?)\s+(?:off\s+)?with\s+\$?\s*({_NUM})", re.IGNORECASE)


@dataclass(frozen=True)
class Atom:
    """A quantity a trace establishes. role: "result" (of an equation), "answer" or "given" (a start value
    stated in words); value: a Fraction (a non-numeric answer: its text; an equation with no numeric side:
    None); source: the result's canonical expression; alt: a numeric one's operation on its evaluated operands
    ("+(2,12)" for 3*4+2), so a variant that writes that step as 12+2 still establishes it."""

    role: str
    value: Fraction | str | None
    source: str = ""
    alt: str | None = None

    def keys(self) -> list[tuple]:
        return [(self.role, self.value, self.source)] + ([(self.role, self.value, "~" + self.alt)] if self.alt else [])


def _tokens(text: str) -> list[tuple[str, str]]:
    out = []
    for m in _TOKEN.finditer(text):
        kind, s = m.lastgroup, m.group()
        if kind == "n" or kind == "w":  # a word ends the math; one letter is a variable
            out.append(("n", s) if kind == "n" else ("v", s) if len(s) == 1 else _BRK)
        elif kind != "sp" and s not in _SKIP:
            out.append(("o", _OPS[s]) if s in _OPS else (_KINDS[s], s) if s in _KINDS else ("x", s) if s in _POISON
                       or (kind == "cmd" and s[1:2].isalpha() and s not in _BREAK_CMDS) else _BRK)
    return out


def _parse(toks):
    """The expression all the tokens spell, as a tuple tree, or None. Recursive descent, depth-bounded:
    expr := term (+|- term)*; term := unary (*|/ unary | implicit: 2x, 2(x+1))*; unary := (+|-) unary |
    number | variable | (expr) | {expr} | [expr] | \\frac{expr}{expr}."""
    if not toks or len(toks) > _MAX_SIDE:
        return None
    pos = [0]

    def take(peek=False):
        tok = toks[pos[0]] if pos[0] < len(toks) else ("end", "")
        pos[0] += not peek
        return tok

    def expr(d):
        node = term(d)
        while take(True) in (("o", "+"), ("o", "-")):
            node = (take()[1], node, term(d))
        return node

    def term(d):
        node = unary(d)
        while (t := take(True)) in (("o", "*"), ("o", "/")) or t[0] == "v" or t == ("(", "("):
            node = (take()[1] if t[0] == "o" else "*", node, unary(d))
        return node

    def unary(d):
        if d > _MAX_DEPTH:
            raise ValueError
        kind, s = take()
        if kind == "o" and s in "+-":  # a sign only where an operand is expected: in x-2 the 2 is an operand
            node = unary(d + 1)
            return ("neg", node) if s == "-" else node
        if kind in ("n", "v"):
            return ("n", Fraction(s.replace(",", ""))) if kind == "n" else ("v", s)
        if kind == "(":
            return closed(s, d)
        if kind == "f" and take() == ("(", "{"):
            num = closed("{", d)
            if take() == ("(", "{"):
                return ("/", num, closed("{", d))
        raise ValueError

    def closed(opener, d):
        node = expr(d + 1)
        if take() != (")", _PAIRS[opener]):
            raise ValueError
        return node

    try:
        node = expr(0)
    except ValueError:
        return None
    return node if pos[0] == len(toks) else None


def _value(node):
    if node[0] in ("n", "v"):
        return node[1] if node[0] == "n" else None
    vals = [_value(c) for c in node[1:]]
    return None if None in vals else -vals[0] if node[0] == "neg" else _ARITH[node[0]](*vals)


def _fmt(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def _operands(node):
    """The operands of + and * flattened (a+b+c has three), of - and / as written."""
    if node[0] not in ("+", "*"):
        return list(node[1:])
    return [x for c in node[1:] for x in (_operands(c) if c[0] == node[0] else [c])]


def _canon(node) -> str:
    """Canonical text: the operands of + and * sorted, so 5+12 and 12+5 read the same."""
    kind = node[0]
    if kind in ("n", "v"):
        return _fmt(node[1]) if kind == "n" else node[1]
    parts = [_canon(c) if c[0] in ("n", "v") else f"({_canon(c)})" for c in _operands(node)]
    return "-" + parts[0] if kind == "neg" else kind.join(sorted(parts) if kind in ("+", "*") else parts)


def _alt(node) -> str | None:
    """A numeric expression's operation on its evaluated operands: (12+5)*2 and 17*2 are both "*(2,17)"."""
    vals = [_value(c) for c in _operands(node)] if node[0] in ("+", "-", "*", "/") else [None]
    if None in vals:
        return None
    return f"{node[0]}({','.join(map(_fmt, sorted(vals) if node[0] in ('+', '*') else vals))})"


def _side(part, left: bool):
    """The longest suffix (left side) or prefix (right side) of a part that parses, unless it is cut out of
    a larger expression: 2^3 = 8 and \\sqrt{16} = 4 state no 3 = 8 or 16 = 4."""
    n = len(part)
    for cut in range(max(0, n - _MAX_SIDE), n) if left else range(min(n, _MAX_SIDE), 0, -1):
        node = _parse(part[cut:] if left else part[:cut])
        if node is not None:
            nxt = (part[cut - 1] if cut > 0 else _BRK) if left else (part[cut] if cut < n else _BRK)
            return None if nxt[0] in ("o", "f", "x") else node
    return None


def _chains(run):
    """The sides of each equation chain (lhs = mid = rhs) in a run of math tokens."""
    parts = [[]]
    for t in run:
        parts.append([]) if t[0] == "=" else parts[-1].append(t)
    sides = [s for s in (_side(parts[0], True),) if s]
    for i, part in enumerate(parts[1:], start=1):
        full = _parse(part) if i < len(parts) - 1 else None
        if full is not None:
            sides.append(full)
            continue
        sides += [s for s in (_side(part, False),) if s]
        if len(sides) >= 2:
            yield sides
        sides = [s for s in (_side(part, True),) if s]


def _lit(node) -> bool:
    return node[0] == "n" or (node[0] == "neg" and node[1][0] == "n")


def _leaves(node):
    return [node[1]] if node[0] == "n" else [x for c in node[1:] if isinstance(c, tuple) for x in _leaves(c)]


def _result(sides) -> Atom | None:
    """The chain's atom: the value of its rightmost number (else of its rightmost numeric side), from the
    first side that computes something; 17 = 17 establishes nothing."""
    if all(_lit(s) for s in sides):
        return None
    src = next((s for s in sides if s[0] not in ("n", "v", "neg")), None) or next(s for s in sides if not _lit(s))
    lits = [s for s in sides if _lit(s)]
    value = _value(lits[-1]) if lits else next((v for v in map(_value, reversed(sides)) if v is not None), None)
    return Atom("result", value, _canon(src) if value is not None else "=".join(map(_canon, sides)), _alt(src))


def _answer_value(answer: str):
    node = _parse(_tokens(answer[:500].rsplit("=", 1)[-1]))  # "x = 5" answers 5
    value = _value(node) if node is not None else None
    return value if value is not None else _canon(node) if node is not None else re.sub(r"\s+", "", answer)


@lru_cache(maxsize=1024)
def _analyse(text: str) -> tuple[tuple[Atom, ...], frozenset]:
    """(the text's atoms, the keys a native atom may match in it); cached: a native meets several variants."""
    atoms, leaves, run = [], set(), []
    lines = [ln for ln in text[:_MAX_CHARS].split("\n") if "=" in ln]  # a line break ends the math anyway
    for tok in _tokens("\n".join(lines)) + [_BRK]:
        if tok != _BRK:
            run.append(tok)
            continue
        for sides in _chains(run) if any(t[0] == "=" for t in run) else ():
            if len(atoms) >= _MAX_EQS:
                break
            atoms += [a for a in (_result(sides),) if a]
            leaves.update(x for s in sides for x in _leaves(s))
        run = []
    atoms += [Atom("given", Fraction(m[1].replace(",", ""))) for m in _GIVEN.finditer(text[:_MAX_CHARS])]
    answer = extract_answer(text).answer
    atoms += [Atom("answer", _answer_value(answer))] if answer else []
    atoms = list(dict.fromkeys(atoms))  # a restated step establishes nothing new
    keys = {k for a in atoms for k in a.keys()} | {("given", v, "") for v in leaves}  # a start value computed with
    return tuple(atoms), frozenset(keys)


def information_atoms(text: str) -> list[Atom]:
    """The quantities a trace establishes: each equation's result, the final answer, stated start values."""
    return list(_analyse(text or "")[0])


def semantic_preservation(native: str, variant: str) -> float:
    """Share of the native trace's atoms the variant still establishes: same role and value, and for a result
    the same canonical source (or, numeric, the same operation on the same values). 1.0 when native has none."""
    atoms = _analyse(native or "")[0]
    if not atoms:
        return 1.0
    keys = _analyse(variant or "")[1]
    return sum(any(k in keys for k in a.keys()) for a in atoms) / len(atoms)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (rapidfuzz's C++ bit-parallel kernel: ~0.1 ms per 1,500-character pair, against
    ~40 ms for a numpy row loop; 34K rewrites x 4 variants per family at paper scale)."""
    return Levenshtein.distance(a, b)


def normalized_edit_distance(a: str, b: str) -> float:
    """Edit distance divided by the longer length: 0 identical, 1 nothing in common."""
    longest = max(len(a), len(b))
    return edit_distance(a, b) / longest if longest else 0.0
