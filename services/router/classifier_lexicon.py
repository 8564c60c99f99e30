"""The categoriser's hand lexicon: weighted stems and phrases per category and language
(``classifier_data/lexicon/<lang>.ini``), matched by word prefix, within one typo, inside German
compounds, and through the transliteration skeleton for Cyrillic typed in Latin letters.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from services.router.classifier_text import is_cyrillic, skeleton, tokenize

# --------------------------------------------------------------------------------------------
# Lexicon


@dataclass(frozen=True)
class Term:
    category: str
    weight: float
    parts: tuple[str, ...]  # word prefixes; "*" = up to three arbitrary words
    exact: tuple[bool, ...]  # part must be the whole word, not a prefix
    language: str
    source: str
    translit: bool = False


_WILDCARD_SPAN = 3


def parse_term(raw: str, category: str, weight: float, language: str) -> Term | None:
    parts: list[str] = []
    exact: list[bool] = []
    for piece in raw.strip().split():
        if piece == "*":
            parts.append("*")
            exact.append(False)
            continue
        is_exact = piece.endswith("$")
        toks = tokenize(piece.rstrip("$"))
        for k, tok in enumerate(toks):
            parts.append(tok)
            # A stem of three letters or fewer ("cło" folds to "clo") would hit far too many words.
            exact.append((is_exact and k == len(toks) - 1) or (len(tok) <= 3 and tok.isalpha()))
    while parts and parts[0] == "*":
        parts.pop(0)
        exact.pop(0)
    while parts and parts[-1] == "*":
        parts.pop()
        exact.pop()
    if not parts:
        return None
    return Term(category, weight, tuple(parts), tuple(exact), language, raw.strip())


def translit_term(term: Term) -> Term | None:
    if not any(is_cyrillic(ch) for p in term.parts for ch in p):
        return None
    parts = tuple(p if p == "*" else skeleton(p) for p in term.parts)
    # Very short skeletons ("ne", "za") collide with Polish, Lithuanian and German words.
    if all(p == "*" or len(p) < 4 for p in parts):
        return None
    return Term(term.category, term.weight * 0.9, parts, term.exact, term.language, term.source, translit=True)


def parse_lexicon(text: str, language: str) -> list[Term]:
    """Lexicon file: "[category]" sections, then lines "weight: term, term, ..."."""
    terms: list[Term] = []
    category: str | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            category = line[1:-1].strip()
            continue
        weight_text, sep, rest = line.partition(":")
        if not sep or category is None:
            raise ValueError(f"lexicon {language} line {lineno}: expected 'weight: term, term' under a [category]")
        weight = float(weight_text)
        for raw_term in rest.split(","):
            if raw_term.strip():
                term = parse_term(raw_term, category, weight, language)
                if term:
                    terms.append(term)
    return terms


class TermIndex:
    """Terms bucketed by the first three letters of their first word, for prefix matching.

    Besides exact prefix matches it finds two kinds of weaker ones, each at a discount:
    * typos: a single-word stem of six letters or more within one edit (insertion, deletion,
      substitution or swap of neighbours) of the start of a word: "retrun", "paymnet", "корзну";
    * German compounds: a German stem inside a long word: "Herbstkampagne", "Kundenkonto".
    """

    FUZZY_MIN = 6
    FUZZY_FACTOR = 0.7
    INFIX_MIN = 5
    INFIX_FACTOR = 0.8
    INFIX_LANGUAGES = frozenset({"de"})

    def __init__(self, terms: Iterable[Term]):
        # The same words listed for several languages ("paypal", "404") count once, at the
        # highest weight given; they are one piece of evidence, not seven.
        unique: dict[tuple[str, tuple[str, ...], tuple[bool, ...]], Term] = {}
        listed: dict[tuple[str, tuple[str, ...], tuple[bool, ...]], set[str]] = {}
        for t in terms:
            key = (t.category, t.parts, t.exact)
            listed.setdefault(key, set()).add(t.language)
            if key not in unique or t.weight > unique[key].weight:
                unique[key] = t
        # ... but a word listed for the message's language is never "foreign" to it, whichever
        # language's entry was kept ("куртк" is Russian and Ukrainian alike).
        self.languages = {key: frozenset(langs) for key, langs in listed.items()}
        self.by_key: dict[str, list[Term]] = {}
        self.fuzzy: dict[str, list[Term]] = {}
        self.infix: dict[str, list[Term]] = {}
        self.fuzzy_lengths: set[int] = set()
        for t in unique.values():
            self.by_key.setdefault(t.parts[0][:3], []).append(t)
            if len(t.parts) == 1 and t.parts[0].isalpha():
                stem = t.parts[0]
                if len(stem) >= self.FUZZY_MIN:
                    self.fuzzy_lengths.add(len(stem))
                    for variant in _deletions(stem):
                        self.fuzzy.setdefault(variant, []).append(t)
                if len(stem) >= self.INFIX_MIN and t.language in self.INFIX_LANGUAGES:
                    self.infix.setdefault(stem[:3], []).append(t)
        # A word's near misses depend on the word alone and the index never changes once built:
        # kept per word (the same words recur message after message; the look-up costs a set of
        # deletions per prefix length and a scan of the candidates).
        self._fuzzy_of = lru_cache(maxsize=32768)(self._fuzzy)

    def listed_for(self, term: Term, language: str) -> bool:
        return language in self.languages.get((term.category, term.parts, term.exact), (term.language,))

    def matches(self, tokens: Sequence[str]) -> list[tuple[Term, int, int, float]]:
        found: list[tuple[Term, int, int, float]] = []
        seen: set[tuple[str, tuple[str, ...]]] = set()
        matched_at: set[int] = set()
        for i, tok in enumerate(tokens):
            for t in self.by_key.get(tok[:3], ()):
                # The first word checked here, without a call: most candidates fail on it.
                first = t.parts[0]
                if tok != first and (t.exact[0] or not tok.startswith(first)):
                    continue
                end = _match(tokens, i + 1, t, 1)
                if end >= 0:
                    matched_at.add(i)
                    key = (t.category, t.parts)
                    if key not in seen:
                        seen.add(key)
                        found.append((t, i, end, 1.0))
        for i, tok in enumerate(tokens):
            if i in matched_at or len(tok) < self.FUZZY_MIN - 1 or not tok.isalpha():
                continue
            for t in self._fuzzy_of(tok):
                key = (t.category, t.parts)
                if key not in seen:
                    seen.add(key)
                    found.append((t, i, i + 1, self.FUZZY_FACTOR))
            if len(tok) >= 8 and self.infix:
                for k in range(3, len(tok) - self.INFIX_MIN + 1):
                    for t in self.infix.get(tok[k:k + 3], ()):
                        key = (t.category, t.parts)
                        if key not in seen and tok.startswith(t.parts[0], k):
                            seen.add(key)
                            found.append((t, i, i + 1, self.INFIX_FACTOR))
        return found

    def _fuzzy(self, tok: str) -> tuple[Term, ...]:
        out: list[Term] = []
        # A prefix's deletions once per length (three stem lengths share each), in the same order.
        deletions: dict[int, set[str]] = {}
        for n in self.fuzzy_lengths:
            for m in (n - 1, n, n + 1):
                if m > len(tok) or m < self.FUZZY_MIN - 1:
                    continue
                prefix = tok[:m]
                keys = deletions.get(m)
                if keys is None:
                    keys = deletions[m] = _deletions(prefix)
                for key in keys:
                    for t in self.fuzzy.get(key, ()):
                        stem = t.parts[0]
                        # Typos rarely hit the first letter; requiring it avoids "price"/"prince".
                        # A whole-word term must match the whole word ("retrun" for "return$").
                        if (len(stem) == n and stem[0] == tok[0] and t not in out
                                and (not t.exact[0] or m == len(tok)) and _within_one_edit(prefix, stem)):
                            out.append(t)
        return tuple(out)


def _deletions(word: str) -> set[str]:
    return {word} | {word[:k] + word[k + 1:] for k in range(len(word))}


def _within_one_edit(typed: str, stem: str) -> bool:
    """One edit (a swap of neighbours counts as one) away, but not in the stem's last letter.

    The last letter is excluded because that is where inflection, not a typo, makes words
    differ: "обратна" is not a misspelt "обратно", "strony" not a misspelt "strona".
    """
    if typed == stem:
        return True
    la, lb = len(typed), len(stem)
    if abs(la - lb) > 1:
        return False
    last = lb - 1
    if la == lb:
        diff = [k for k in range(la) if typed[k] != stem[k]]
        if len(diff) == 1:
            return diff[0] < last
        return (len(diff) == 2 and diff[1] == diff[0] + 1 and diff[1] < last
                and typed[diff[0]] == stem[diff[1]] and typed[diff[1]] == stem[diff[0]])
    k = 0
    shorter, longer = (typed, stem) if la < lb else (stem, typed)
    while k < len(shorter) and shorter[k] == longer[k]:
        k += 1
    return k < last and shorter[k:] == longer[k + 1:]


def _part_ok(tok: str, part: str, exact: bool) -> bool:
    return tok == part if exact else tok.startswith(part)


def _match(tokens: Sequence[str], i: int, term: Term, j: int) -> int:
    """End index (exclusive) if term.parts[j:] matches tokens[i:], else -1."""
    parts = term.parts
    if j == len(parts):
        return i
    if parts[j] == "*":
        for skip in range(0, _WILDCARD_SPAN + 1):
            if i + skip > len(tokens):
                break
            end = _match(tokens, i + skip, term, j + 1)
            if end >= 0:
                return end
        return -1
    if i >= len(tokens) or not _part_ok(tokens[i], parts[j], term.exact[j]):
        return -1
    return _match(tokens, i + 1, term, j + 1)


def best_matches(found: list[tuple[Term, int, int, float]]) -> list[tuple[Term, int, int, float]]:
    """Drops hits shadowed by a longer or heavier overlapping hit.

    "cash on delivery" must not also count as "delivery"; "send it back" not also as "send".
    """
    found = sorted(found, key=lambda m: (-(m[2] - m[1]), -m[0].weight * m[3]))
    taken: list[tuple[int, int, str]] = []
    out: list[tuple[Term, int, int, float]] = []
    for term, start, end, quality in found:
        clash = False
        for s, e, cat in taken:
            if start < e and s < end:
                # The same words may count for two categories ("refund": returns and payment),
                # but one category counts them only once, and a longer phrase shadows its parts.
                if (s, e) != (start, end) or cat == term.category:
                    clash = True
                    break
        if clash:
            continue
        taken.append((start, end, term.category))
        out.append((term, start, end, quality))
    return out
