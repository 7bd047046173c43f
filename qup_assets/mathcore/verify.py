"""Hardened answer verification: math-verify in worker processes that are killed on timeout.

math-verify's own timeouts use signal.alarm: they fail outside the main thread and
cannot interrupt C-level big-integer work (9^9^9^9). So every comparison that is not
decided by a cheap exact check runs in a spawned worker; a worker that exceeds the
deadline is SIGKILLed and replaced, and the item is recorded as `timeout`. Length,
nesting and exponent pre-filters reject the obvious bombs before any parsing.
Only math-verify's LaTeX path is used: its plain-expression path calls sympy's
parse_expr (eval underneath), which model text must never reach.
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import re
import time
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection, wait
from typing import Iterable, Literal

from qup_assets.mathcore.extract import CODE_LIKE, AnswerFormats, clean_text, extract_answer, normalize_answer

Verdict = Literal["correct", "wrong", "no_answer", "timeout", "rejected"]

MAX_BRACE_DEPTH = 24
MAX_DIGITS = 300
MAX_EXPONENT = 10_000
MAX_FACTORIAL = 1_000


@dataclass(frozen=True)
class VerifyResult:
    verdict: Verdict
    reason: str
    extracted: str | None
    gold: str
    seconds: float = 0.0

    @property
    def correct(self) -> bool:
        return self.verdict == "correct"

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- pre-filters


def _brace_depth(s: str) -> int:
    depth = deepest = 0
    for c in s:
        if c == "{":
            depth += 1
            deepest = max(deepest, depth)
        elif c == "}":
            depth = max(0, depth - 1)
    return deepest


_POWER = re.compile(r"\^|\*\*")
_FACTORIAL = re.compile(r"(\d+)\s*!")
_CLOSE = {"{": "}", "(": ")"}


def _exponent_at(s: str, i: int) -> tuple[str, int]:
    """The exponent that starts at s[i] (a balanced {...}/(...) group or a token) and where it ends."""
    while i < len(s) and s[i] == " ":
        i += 1
    if i < len(s) and s[i] in _CLOSE:
        open_, close, depth = s[i], _CLOSE[s[i]], 0
        for j in range(i, len(s)):
            depth += (s[j] == open_) - (s[j] == close)
            if depth == 0:
                return s[i + 1 : j], j + 1
        return s[i + 1 :], len(s)
    m = re.match(r"[-+]?[\d,.]+|\\?[a-zA-Z]+", s[i:])
    return (m.group(0), i + m.end()) if m else ("", i)




def prefilter(answer: str, max_chars: int) -> str | None:
    """Why an answer is too dangerous or too large to parse, or None when it may be parsed."""
    if len(answer) > max_chars:
        return f"answer too long ({len(answer)} chars > {max_chars})"
    if _brace_depth(answer) > MAX_BRACE_DEPTH:
        return f"braces nested deeper than {MAX_BRACE_DEPTH}"
    if re.search(r"\d{%d,}" % (MAX_DIGITS + 1), answer):
        return f"a number with more than {MAX_DIGITS} digits"
    for m in _POWER.finditer(answer):
        exp, end = _exponent_at(answer, m.end())
        if _POWER.search(exp) or _POWER.match(answer[end:].lstrip()):
            return "nested exponent (power tower)"
        digits = re.sub(r"[^\d]", "", exp)
        if digits and (len(digits) > 8 or int(digits) > MAX_EXPONENT):
            return f"exponent larger than {MAX_EXPONENT}"
    for m in _FACTORIAL.finditer(answer):
        if len(m.group(1)) > 6 or int(m.group(1)) > MAX_FACTORIAL:
            return f"factorial of a number larger than {MAX_FACTORIAL}"
    return None


def gold_unusable(gold: str, max_chars: int) -> str | None:
    """Why a (non-empty, normalized) gold answer cannot be used before any parsing, or None."""
    why = prefilter(gold, max_chars)
    if why:
        return f"gold: {why}"
    m = CODE_LIKE.search(gold) or re.search("`", gold)  # a gold in backticks is markup gone wrong too
    return f"gold looks like code ({m.group(0)!r})" if m else None


_INT = re.compile(r"[-+]?\d{1,%d}" % MAX_DIGITS)


def _fast_verdict(gold: str, pred: str) -> bool | None:
    """Decide without parsing when both sides are plain integers or identical strings."""
    if gold == pred:
        return True
    if _INT.fullmatch(gold) and _INT.fullmatch(pred):
        return int(gold) == int(pred)
    return None


# ---------------------------------------------------------------- worker process


def _worker_main(conn: Connection) -> None:  # pragma: no cover - runs in the child
    import logging

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    from math_verify import LatexExtractionConfig, parse, verify

    config = [LatexExtractionConfig(boxed_match_priority=0)]
    conn.send(("ready", None))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        gold, pred = msg
        try:
            g = parse("\\boxed{" + gold + "}", extraction_config=config, parsing_timeout=None)
            if not g:
                conn.send(("gold_unparsed", None))
                continue
            if pred is None:  # a gold checked on its own
                conn.send(("ok", True))
                continue
            p = parse("\\boxed{" + pred + "}", extraction_config=config, parsing_timeout=None)
            if not p:
                conn.send(("pred_unparsed", None))
                continue
            # set/relation comparison both ways: a gold interval (1,\\infty) accepts the relation x>1
            conn.send(("ok", bool(verify(g, p, allow_set_relation_comp=True, timeout_seconds=None))))
        except Exception as e:  # math-verify raised on hostile input: a recorded verdict, not a crash
            conn.send(("error", f"{type(e).__name__}: {str(e)[:200]}"))


class _Worker:
    def __init__(self, ctx, startup_timeout: float):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child,), daemon=True, name="qup-verifier")
        self.proc.start()
        child.close()
        if not self.conn.poll(startup_timeout):
            self.kill()
            raise RuntimeError(f"verifier worker did not start within {startup_timeout}s")
        try:
            self.conn.recv()
        except EOFError:
            self.proc.join(5)
            raise RuntimeError(
                f"verifier worker exited at start-up (exit code {self.proc.exitcode}); spawned workers re-import "
                "the main module, so a script run from stdin or without an `if __name__ == '__main__':` guard fails"
            ) from None
        self.task: int | None = None
        self.deadline = 0.0

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()


class VerifierPool:
    """A pool of killable math-verify workers. Use as a context manager or call close()."""

    def __init__(self, workers: int = 2, timeout: float = 5.0, max_answer_chars: int = 512, startup_timeout: float = 60,
                 answer_formats: AnswerFormats = "standard"):
        self.answer_formats = answer_formats
        self.n_workers = workers
        self.timeout = timeout
        self.max_answer_chars = max_answer_chars
        self.startup_timeout = startup_timeout
        self._ctx = mp.get_context("spawn")
        self._workers: list[_Worker] = []
        self.restarts = 0

    def __enter__(self) -> "VerifierPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for w in self._workers:
            try:
                w.conn.send(None)
            except (OSError, BrokenPipeError):
                pass
            w.proc.join(1)
            w.kill()
        self._workers = []

    def _ensure_workers(self, n: int) -> None:
        while len(self._workers) < min(n, self.n_workers):
            self._workers.append(_Worker(self._ctx, self.startup_timeout))

    # ------------------------------------------------------------ public API

    def verify(self, gold: str, prediction: object) -> VerifyResult:
        return self.verify_many([(gold, prediction)])[0]

    def check_golds(self, golds: Iterable[object]) -> list[VerifyResult]:
        """Each gold parsed on its own (never compared with itself, which a string shortcut would answer):
        an empty, too large, code-like or unparsable gold is `rejected` with the reason, a usable one `correct`."""
        results: list[VerifyResult | None] = []
        pending: list[tuple[int, str, None]] = []
        for i, raw in enumerate(golds):
            gold = normalize_answer(clean_text(raw))
            why = gold_unusable(gold, self.max_answer_chars) if gold else "gold answer is empty"
            if why:
                results.append(VerifyResult("rejected", why, None, _preview(gold)))
                continue
            results.append(VerifyResult("correct", "integer", None, gold) if _INT.fullmatch(gold) else None)
            if results[-1] is None:
                pending.append((i, gold, None))
        if pending:
            self._run_pending(pending, results)
        return results

    def verify_many(self, pairs: Iterable[tuple[object, object]], extract: bool = True) -> list[VerifyResult]:
        """Verify (gold answer, model text) pairs. With extract=False the prediction is already an answer."""
        pairs = list(pairs)
        results: list[VerifyResult | None] = [None] * len(pairs)
        pending: list[tuple[int, str, str]] = []
        for i, (gold_raw, pred_raw) in enumerate(pairs):
            gold = normalize_answer(clean_text(gold_raw))
            if extract:
                ex = extract_answer(pred_raw, self.answer_formats)
                pred = ex.answer
            else:
                pred = normalize_answer(clean_text(pred_raw)) or None
            if not gold:
                results[i] = VerifyResult("rejected", "gold answer is empty", pred, gold)
                continue
            if pred is None:
                results[i] = VerifyResult("no_answer", "no final answer found", None, gold)
                continue
            why = gold_unusable(gold, self.max_answer_chars)
            if why:
                results[i] = VerifyResult("rejected", why, _preview(pred), _preview(gold))
                continue
            why = prefilter(pred, self.max_answer_chars)
            if why:
                results[i] = VerifyResult("rejected", why, _preview(pred), gold)
                continue
            fast = _fast_verdict(gold, pred)
            if fast is not None:
                verdict: Verdict = "correct" if fast else "wrong"
                results[i] = VerifyResult(verdict, "exact match" if fast else "different integer", pred, gold)
                continue
            pending.append((i, gold, pred))
        if pending:
            self._run_pending(pending, results)
        return [r for r in results if r is not None]

    def _run_pending(self, pending: list[tuple[int, str, str]], results: list) -> None:
        self._ensure_workers(len(pending))
        queue = list(reversed(pending))
        busy: dict[int, tuple[_Worker, str, str, float]] = {}
        while queue or busy:
            for w in self._workers:
                if w.task is None and queue:
                    i, gold, pred = queue.pop()
                    try:
                        w.conn.send((gold, pred))
                    except (OSError, BrokenPipeError):
                        self._replace(w)
                        queue.append((i, gold, pred))
                        continue
                    w.task = i
                    w.deadline = time.monotonic() + self.timeout
                    busy[i] = (w, gold, pred, time.monotonic())
            if not busy:
                continue
            now = time.monotonic()
            next_deadline = min(w.deadline for w, *_ in busy.values())
            ready = wait([w.conn for w, *_ in busy.values()], timeout=max(0.0, next_deadline - now))
            for i, (w, gold, pred, started) in list(busy.items()):
                elapsed = time.monotonic() - started
                if w.conn in ready:
                    try:
                        status, value = w.conn.recv()
                    except (EOFError, OSError):
                        status, value = "error", "verifier worker died"
                        self._replace(w)
                    results[i] = _result_from_worker(status, value, gold, pred, elapsed)
                    w.task = None
                    del busy[i]
                elif time.monotonic() >= w.deadline:
                    self._replace(w)
                    results[i] = VerifyResult(
                        "timeout", f"no verdict within {self.timeout:g}s (worker killed)", pred, gold, elapsed
                    )
                    del busy[i]

    def _replace(self, w: _Worker) -> None:
        w.kill()
        idx = self._workers.index(w)
        self._workers[idx] = _Worker(self._ctx, self.startup_timeout)
        self.restarts += 1


def _result_from_worker(status: str, value, gold: str, pred: str, elapsed: float) -> VerifyResult:
    if status == "ok":
        why = "math-verify" if pred is not None else "gold parses on its own"
        return VerifyResult("correct" if value else "wrong", why, pred, gold, elapsed)
    if status == "gold_unparsed":
        return VerifyResult("rejected", "gold answer could not be parsed", pred, gold, elapsed)
    if status == "pred_unparsed":
        return VerifyResult("no_answer", "answer could not be parsed", pred, gold, elapsed)
    return VerifyResult("rejected", f"verifier error: {value}", pred, gold, elapsed)


def _preview(s: str, n: int = 80) -> str:
    return s if len(s) <= n else s[:n] + f"...(+{len(s) - n} chars)"


_DEFAULT: VerifierPool | None = None


def default_pool() -> VerifierPool:
    """A process-wide pool for one-off calls (the CLI); closed at exit."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = VerifierPool()
        atexit.register(_DEFAULT.close)
    return _DEFAULT
