"""A small checker for regexes that can take more than linear time on hostile text.

It reads the parse tree of Python's own regex parser (re._parser, sre_parse before 3.11) and reports
three shapes, each of which backtracks once per way of splitting a run of characters:

- adjacent: two unbounded quantifiers over overlapping characters with nothing between them that
  must consume a character outside their overlap — `\\s*(-{2,})?\\s*`, `.*\\s*:`, `[^<>]+@[^<>]+`;
- nested: an unbounded quantifier whose body can end with what it can start with again, and one of
  the two is itself unbounded — `(a+)+`, `(\\s*x?)*`, `(\\s*\\s)+`;
- restart: an unanchored pattern that begins with an unbounded run which can then fail — searched
  from every start inside a long run it rescans the run each time: `[\\s.!,]+$`, `\\b[a-z.]*@`.

Characters sets are compared on a sample: every character named in the pattern (and its case
partner), the ends of its ranges, ASCII and a few non-ASCII letters, digits and spaces. Bounded
quantifiers ({0,300}) are fine: their cost is bounded by the bound; so are possessive ones (`\\*{3,}+`)
for the first two shapes, as they never give back what they took.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

try:
    from re import _constants as C  # type: ignore[attr-defined]  # noqa: N812
    from re import _parser as P  # type: ignore[attr-defined]  # noqa: N812
except ImportError:  # pragma: no cover - Python < 3.11
    import sre_constants as C  # noqa: N812
    import sre_parse as P  # noqa: N812

UNBOUNDED = C.MAXREPEAT
REPEATS = {C.MAX_REPEAT, C.MIN_REPEAT} | ({C.POSSESSIVE_REPEAT} if hasattr(C, "POSSESSIVE_REPEAT") else set())
_EXTRA_SAMPLE = " \t\n\r\x0b\x0c\xa0\u2003\u3000éÉßяЯіЇ٣５_-.,:;!?@<>*=/\\'\"()[]{}#$%&+|~^`\u2014\u2013\u20ac\uffff"
_CATEGORY = {
    C.CATEGORY_DIGIT: re.compile(r"\d"), C.CATEGORY_NOT_DIGIT: re.compile(r"\D"),
    C.CATEGORY_SPACE: re.compile(r"\s"), C.CATEGORY_NOT_SPACE: re.compile(r"\S"),
    C.CATEGORY_WORD: re.compile(r"\w"), C.CATEGORY_NOT_WORD: re.compile(r"\W"),
}


@dataclass(frozen=True)
class Atom:
    """One thing that consumes characters: a single character (bounded) or an unbounded run."""

    chars: frozenset[str]  # of the sample
    unbounded: bool
    text: str  # for the report


@dataclass
class Summary:
    first: list[Atom]
    last: list[Atom]
    nullable: bool  # can match the empty string
    width: frozenset[str]  # every character it can consume
    simple: bool  # a single character or a bounded run of single characters


class _Checker:
    def __init__(self, pattern: str | bytes, flags: int):
        self.pattern = pattern
        self.text = pattern if isinstance(pattern, str) else pattern.decode("latin-1")
        self.tree = P.parse(pattern, flags)
        self.ignorecase = bool(flags & re.IGNORECASE) or bool(self.tree.state.flags & re.IGNORECASE)
        self.dotall = bool(flags & re.DOTALL) or bool(self.tree.state.flags & re.DOTALL)
        self.problems: list[str] = []
        self.sample = self._sample()

    # --- character sets over the sample ---------------------------------------------------------
    def _sample(self) -> list[str]:
        chars = {chr(c) for c in range(0x250)} | set(_EXTRA_SAMPLE)
        for node in self._walk(self.tree):
            op, av = node
            if op in (C.LITERAL, C.NOT_LITERAL):
                chars.add(chr(av))
            elif op == C.RANGE:
                for c in (av[0] - 1, av[0], av[1], av[1] + 1):
                    if 0 <= c <= 0x10FFFF:
                        chars.add(chr(c))
        cased = {v for c in chars for v in (c.lower(), c.upper()) if len(v) == 1}
        return sorted(chars | cased)

    def _walk(self, items) -> Iterator[tuple]:
        for op, av in items:
            yield (op, av)
            if op == C.IN:
                yield from av
            elif op in REPEATS:
                yield from self._walk(av[2])
            elif op == C.SUBPATTERN:
                yield from self._walk(av[-1])
            elif op == C.BRANCH:
                for alt in av[1]:
                    yield from self._walk(alt)
            elif op in (C.ASSERT, C.ASSERT_NOT):
                yield from self._walk(av[1])
            elif hasattr(C, "ATOMIC_GROUP") and op == C.ATOMIC_GROUP:
                yield from self._walk(av)

    def _in(self, items, ch: str) -> bool:
        negate = False
        hit = False
        for op, av in items:
            if op == C.NEGATE:
                negate = True
            elif op == C.LITERAL:
                hit = hit or self._same(ch, chr(av))
            elif op == C.RANGE:
                hit = hit or any(av[0] <= ord(v) <= av[1] for v in self._variants(ch))
            elif op == C.CATEGORY:
                hit = hit or bool(_CATEGORY[av].match(ch)) if av in _CATEGORY else True
        return hit != negate

    def _variants(self, ch: str) -> set[str]:
        if not self.ignorecase:
            return {ch}
        return {v for v in (ch, ch.lower(), ch.upper()) if len(v) == 1}

    def _same(self, a: str, b: str) -> bool:
        return a == b or (self.ignorecase and len(a) == len(b) == 1 and a.lower() == b.lower())

    def _char_set(self, op, av) -> frozenset[str] | None:
        """The sample characters a single-character node matches; None if it is not one."""
        if op == C.LITERAL:
            return frozenset(c for c in self.sample if self._same(c, chr(av)))
        if op == C.NOT_LITERAL:
            return frozenset(c for c in self.sample if not self._same(c, chr(av)))
        if op == C.ANY:
            return frozenset(c for c in self.sample if self.dotall or c != "\n")
        if op == C.IN:
            return frozenset(c for c in self.sample if self._in(av, c))
        if op in (C.GROUPREF, getattr(C, "GROUPREF_IGNORE", None)):
            return frozenset(self.sample)  # whatever the group took
        return None

    # --- summaries ---------------------------------------------------------------------------------
    def seq(self, items) -> Summary:
        """Summarise a sequence, reporting adjacent unbounded runs inside it."""
        parts = [self.node(op, av) for op, av in items]
        self._adjacent(parts)
        first: list[Atom] = []
        for part in parts:
            first += part.first
            if not part.nullable:
                break
        last: list[Atom] = []
        for part in reversed(parts):
            last += part.last
            if not part.nullable:
                break
        width = frozenset().union(*(p.width for p in parts)) if parts else frozenset()
        simple = len(parts) == 1 and parts[0].simple
        return Summary(first, last, all(p.nullable for p in parts), width, simple)

    def _adjacent(self, parts: list[Summary]) -> None:
        for i, left in enumerate(parts):
            runs = [a for a in left.last if a.unbounded]
            if not runs:
                continue
            for run in runs:
                shared = run.chars
                for right in parts[i + 1:]:
                    for atom in right.first:
                        if atom.unbounded and atom.chars & shared:
                            self._report(f"adjacent unbounded runs {run.text!r} and {atom.text!r} over the same "
                                         f"characters {_show(atom.chars & shared)}")
                    # Go on past what may match nothing, or only characters both runs can take.
                    if right.nullable or (right.simple and right.width & shared):
                        continue
                    break

    def node(self, op, av) -> Summary:
        chars = self._char_set(op, av)
        if chars is not None:
            atom = Atom(chars, False, _describe(op, av))
            return Summary([atom], [atom], False, chars, True)
        if op in REPEATS:
            low, high, body_items = av
            body = self.seq(body_items)
            # A possessive run never gives back what it took, so nothing can split it another way.
            possessive = hasattr(C, "POSSESSIVE_REPEAT") and op == C.POSSESSIVE_REPEAT
            unbounded = high == UNBOUNDED and not possessive
            if unbounded:
                self._nested(body, body_items)
                if body.simple:
                    atom = Atom(body.width, True, self._span(op, av))
                    return Summary([atom], [atom], low == 0 or body.nullable, body.width, False)
                # A repeated group starts and ends as its body does; where its end meets its own
                # start again is the nested check's business. Its runs count as unbounded here.
                return Summary([_unbounded(a) for a in body.first], [_unbounded(a) for a in body.last],
                               low == 0 or body.nullable, body.width, False)
            # A bounded repeat is its body, a few times: its atoms stay what they are.
            return Summary(body.first, body.last, low == 0 or body.nullable, body.width,
                           body.simple)
        if op == C.SUBPATTERN:
            return self.seq(av[-1])
        if hasattr(C, "ATOMIC_GROUP") and op == C.ATOMIC_GROUP:
            return self.seq(av)
        if op == C.BRANCH:
            alts = [self.seq(alt) for alt in av[1]]
            return Summary([a for s in alts for a in s.first], [a for s in alts for a in s.last],
                           any(s.nullable for s in alts), frozenset().union(*(s.width for s in alts)), False)
        if op in (C.ASSERT, C.ASSERT_NOT):
            self.seq(av[1])  # its inside is checked too, but it consumes nothing here
            return Summary([], [], True, frozenset(), False)
        if op == C.GROUPREF_EXISTS:
            alts = [self.seq(x) for x in av[1:] if x is not None]
            return Summary([a for s in alts for a in s.first], [a for s in alts for a in s.last], True,
                           frozenset().union(*(s.width for s in alts)) if alts else frozenset(), False)
        # AT (anchors, \b) and anything else that consumes nothing.
        return Summary([], [], True, frozenset(), False)

    def _nested(self, body: Summary, items) -> None:
        if body.nullable and any(a.unbounded for a in body.first + body.last):
            self._report(f"an unbounded repeat of something that may be empty with a run inside: {_text(items)!r}")
            return
        for end in body.last:
            for start in body.first:
                if (end.unbounded or start.unbounded) and end.chars & start.chars:
                    self._report(f"nested unbounded runs: {_text(items)!r} repeated, its end {end.text!r} and its "
                                 f"start {start.text!r} take the same characters {_show(end.chars & start.chars)}")
                    return

    # --- the restart shape -----------------------------------------------------------------------------
    def restart(self, items, prefix: tuple[frozenset[str], ...] = ()) -> None:
        items = list(items)
        for k, (op, av) in enumerate(items):
            rest = items[k + 1:]
            if op == C.AT:
                if av in (C.AT_BEGINNING, C.AT_BEGINNING_STRING):
                    return  # anchored: tried at one place only
                continue
            if op in (C.ASSERT, C.ASSERT_NOT):
                continue
            chars = self._char_set(op, av)
            if chars is not None:
                prefix += (chars,)
                continue
            if op == C.SUBPATTERN or (hasattr(C, "ATOMIC_GROUP") and op == C.ATOMIC_GROUP):
                inner = av[-1] if op == C.SUBPATTERN else av
                return self.restart(list(inner) + rest, prefix)
            if op == C.BRANCH:
                for alt in av[1]:
                    self.restart(list(alt) + rest, prefix)
                return
            if op in REPEATS:
                low, high, body_items = av
                body = self.seq(body_items)
                if high != UNBOUNDED:
                    if body.simple:
                        prefix += (body.width,)
                        continue
                    return
                if all(p & body.width for p in prefix) and self._can_fail(rest):
                    self._report(f"an unanchored search starts with the run {self._span(op, av)!r} and may then "
                                 f"fail: every start inside a long run rescans it")
                return
            return

    def _can_fail(self, items) -> bool:
        for op, av in items:
            if op in (C.AT, C.ASSERT, C.ASSERT_NOT):
                return True
            if not self.node(op, av).nullable:
                return True
        return False

    # --- reporting ------------------------------------------------------------------------------------------
    def _span(self, op, av) -> str:
        low, high, body = av
        return f"{_text(body)}{_quantifier(low, high)}"

    def _report(self, problem: str) -> None:
        if problem not in self.problems:
            self.problems.append(problem)


def _quantifier(low: int, high: int) -> str:
    if high == UNBOUNDED:
        return {0: "*", 1: "+"}.get(low, f"{{{low},}}")
    return "?" if (low, high) == (0, 1) else f"{{{low},{high}}}"


def _unbounded(atom: Atom) -> Atom:
    return Atom(atom.chars, True, atom.text + "…") if not atom.unbounded else atom


def _show(chars: frozenset[str]) -> str:
    shown = "".join(sorted(chars)[:8])
    return repr(shown) + ("…" if len(chars) > 8 else "")


def _describe(op, av) -> str:
    if op == C.LITERAL:
        return chr(av)
    if op == C.ANY:
        return "."
    if op == C.NOT_LITERAL:
        return f"[^{chr(av)}]"
    return _in_text(av) if op == C.IN else str(op)


_CATEGORY_TEXT = {C.CATEGORY_DIGIT: r"\d", C.CATEGORY_NOT_DIGIT: r"\D", C.CATEGORY_SPACE: r"\s",
                  C.CATEGORY_NOT_SPACE: r"\S", C.CATEGORY_WORD: r"\w", C.CATEGORY_NOT_WORD: r"\W"}


def _in_text(items) -> str:
    parts = []
    for op, av in items:
        if op == C.NEGATE:
            parts.append("^")
        elif op == C.LITERAL:
            parts.append(re.escape(chr(av)))
        elif op == C.RANGE:
            parts.append(f"{chr(av[0])}-{chr(av[1])}")
        elif op == C.CATEGORY:
            parts.append(_CATEGORY_TEXT.get(av, "?"))
    if len(items) == 1 and items[0][0] == C.CATEGORY:
        return parts[0]
    return "[" + "".join(parts) + "]"


def _text(items) -> str:
    out = []
    for op, av in items:
        if op == C.LITERAL:
            out.append(re.escape(chr(av)))
        elif op in REPEATS:
            inner = _text(av[2])
            out.append((inner if len(av[2]) == 1 else f"(?:{inner})") + _quantifier(av[0], av[1]))
        elif op == C.SUBPATTERN:
            out.append(f"({_text(av[-1])})")  # groups shown capturing or not alike
        elif op == C.BRANCH:
            out.append("(" + "|".join(_text(a) for a in av[1]) + ")")
        elif op == C.IN:
            out.append(_in_text(av))
        elif op == C.ANY:
            out.append(".")
        else:
            out.append("")
    return "".join(out)


def problems(pattern: str | bytes, flags: int = 0) -> list[str]:
    """What makes this pattern superlinear on some input; [] when none of the three shapes is there."""
    checker = _Checker(pattern, flags)
    checker.seq(list(checker.tree))
    checker.restart(list(checker.tree))
    return checker.problems


# --- finding the patterns in the source -----------------------------------------------------------------

_RE_FUNCTIONS = {"compile", "match", "search", "fullmatch", "sub", "subn", "split", "findall", "finditer"}


@dataclass(frozen=True)
class Found:
    where: str  # path:line
    pattern: str | bytes | None  # None: not a literal, so it cannot be checked
    flags: int


def _flags(node: ast.expr | None) -> int:
    if node is None:
        return 0
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "re":
        return int(getattr(re, node.attr))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _flags(node.left) | _flags(node.right)
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    raise ValueError(f"flags not understood: {ast.dump(node)}")


def patterns_in(root: Path, folders: tuple[str, ...]) -> list[Found]:
    """Every `re.<function>(pattern, ...)` call in the Python files under the folders."""
    found: list[Found] = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and isinstance(node.func.value, ast.Name) and node.func.value.id == "re"
                        and node.func.attr in _RE_FUNCTIONS and node.args):
                    continue
                arg = node.args[0]
                where = f"{path.relative_to(root)}:{node.lineno}"
                flag_pos = {"compile": 1, "split": 3, "sub": 4, "subn": 4}.get(node.func.attr, 2)
                flag_node = next((k.value for k in node.keywords if k.arg == "flags"), None)
                if flag_node is None and len(node.args) > flag_pos:
                    flag_node = node.args[flag_pos]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, (str, bytes)):
                    found.append(Found(where, arg.value, _flags(flag_node)))
                else:
                    found.append(Found(where, None, 0))
    return found
