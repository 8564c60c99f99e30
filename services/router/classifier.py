"""Categorises incoming customer messages (product, delivery, returns, payment, technical, other).

Two parts, because neither alone survives real traffic:

* a hand-built multilingual lexicon (``classifier_data/lexicon/<lang>.ini``) of weighted stems and
  phrases per category, matched by word prefix so inflected forms (посылку, przesyłki, siuntinio)
  hit the same entry; Cyrillic entries are also matched in a phonetic Latin "skeleton" so that
  Russian, Ukrainian or Bulgarian written in Latin letters ("gde moya posylka") is understood;
* a multinomial logistic regression (:mod:`services.router.category_model`) over word skeletons,
  prefixes, prefix bigrams and character 4-grams, with the lexicon's per-category scores as
  features among the others (evidence it weighs, not a rule). It is fitted at build time on
  ``classifier_data/train/*.yaml`` (``make classifier-model``) and ships as weights; its
  probabilities are temperature-scaled on cross-validated predictions, so below the threshold
  (a calibrated probability) the message goes to the fallback category (``other``, i.e. triage).

The reason returned with each decision names the matched lexicon terms and the probabilities and
is JSON-serialisable. Operators' corrections count at once: a near-identical message follows the
correction, and a few gradient steps on the corrected example move similar messages too.

Two topics in one message are settled by where the customer puts the weight: words after a
contrast ("but", "still", "only", "the main thing", Russian/Bulgarian "а", Lithuanian "o") count
more, in the lexicon and in the n-grams, so "I paid, but the order is STILL not shipped" is
delivery and "delivery can wait, THE MAIN THING: is the coat lined?" is product. The labelled sets
tests/data/classify/eval.jsonl and holdout.jsonl are regression sets (the lexicon was tuned on
them); neither is training data.

Email bodies are cleaned first with :func:`shared.text.strip_quotes_and_signature`, the gateway's
too: quoted replies, forwarded headers and signatures talk about *our* previous message
and would otherwise decide the category.
"""

from __future__ import annotations

import json
import math
import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from services.router.category_model import MODEL_FILE, LinearModel, load_model, softmax
from shared.text import clean_subject, is_reply_subject, strip_quotes_and_signature
from shared.vocabulary import CATEGORIES, CYRILLIC_LANGUAGES, FALLBACK_CATEGORY

DEFAULT_CATEGORIES = CATEGORIES
FALLBACK = FALLBACK_CATEGORY
DATA_DIR = Path(__file__).with_name("classifier_data")
DEFAULT_THRESHOLD = 0.4
CONFIG_KEYWORD_WEIGHT = 3.0
CORRECTION_WEIGHT = 4.0
# When the message's language is known, another language's terms count less: they still catch
# loanwords and mixed messages, but a false friend (Ukrainian "склад" is "composition", Russian
# "склад" a warehouse) no longer decides.
FOREIGN_TERM_FACTOR = 0.5

# A correction lifts a near-identical message's category by this much (logit) times the similarity.
CORRECTION_BOOST = 8.0
# The online update on a correction: gradient steps until the corrected text itself is this sure.
CORRECTION_STEPS = 20
CORRECTION_TARGET_PROBABILITY = 0.9
CORRECTION_LEARNING_RATE = 1.0
CORRECTION_MIN_SIMILARITY = 0.5
MAX_CHARS = 3000


@dataclass(frozen=True)
class Classification:
    category: str
    confidence: float
    reason: dict[str, Any]


@dataclass(frozen=True)
class Example:
    """A labelled message: shipped training data or an operator's correction."""

    text: str
    category: str
    subject: str | None = None
    language: str | None = None


# --------------------------------------------------------------------------------------------
# Normalisation and tokens

_APOSTROPHES = "'’ʼ`´‘"
_CURRENCY = re.compile(r"[€£$₴₽¥]|\b(eur|euro|euros|usd|gbp|pln|zł|zl|uah|грн|руб|р\.|лв|лева|лв\.)(?=\W|$)", re.IGNORECASE)
_TOKEN = re.compile(r"[^\W_]+|¤")


def _fold_table() -> dict[int, str]:
    table: dict[int, str] = {}
    for cp in range(0xC0, 0x250):
        ch = chr(cp)
        base = "".join(c for c in unicodedata.normalize("NFD", ch) if not unicodedata.combining(c))
        if base != ch and base.isascii():
            table[cp] = base.lower()
    table.update({ord("ł"): "l", ord("Ł"): "l", ord("ß"): "ss", ord("ø"): "o", ord("đ"): "d",
                  ord("æ"): "ae", ord("œ"): "oe", ord("ё"): "е", ord("Ё"): "е", ord("ѝ"): "и"})
    for a in _APOSTROPHES:
        table[ord(a)] = ""
    return table


_FOLD = _fold_table()


def normalise(text: str) -> str:
    """Lower case, Latin diacritics folded (SMS often lacks them), ё→е, apostrophes dropped, money as ¤."""
    text = unicodedata.normalize("NFC", text).lower()
    text = _CURRENCY.sub(" ¤ ", text)
    # "м'який", "hasn't": the apostrophe is part of the word, not a break.
    return text.translate(_FOLD)


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(normalise(text))


_CYR_TO_LAT = {
    "а": "a", "б": "b", "в": "v", "г": "g", "ґ": "g", "д": "d", "е": "e", "є": "ye", "ж": "zh", "з": "z",
    "и": "i", "і": "i", "ї": "yi", "й": "y", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o", "п": "p",
    "р": "r", "с": "s", "т": "t", "у": "u", "ф": "f", "х": "h", "ц": "ts", "ч": "ch", "ш": "sh",
    "щ": "sht", "ъ": "", "ы": "y", "ь": "", "э": "e", "ю": "yu", "я": "ya", "ѝ": "i",
}
_SKELETON_STEPS = (
    ("shch", "s"), ("sht", "s"), ("sch", "s"), ("sh", "s"), ("ch", "c"), ("zh", "z"), ("kh", "h"),
    ("ts", "c"), ("tz", "c"), ("x", "h"), ("w", "v"), ("q", "k"),
    ("yu", "u"), ("ju", "u"), ("iu", "u"), ("ya", "a"), ("ja", "a"), ("ia", "a"), ("yo", "o"), ("jo", "o"),
    ("ye", "e"), ("je", "e"), ("ie", "e"), ("yi", "i"), ("ji", "i"), ("y", "i"), ("j", "i"),
)
_DOUBLE = re.compile(r"(.)\1+")


@lru_cache(maxsize=65536)
def skeleton(token: str) -> str:
    """A phonetic Latin key shared by a Cyrillic word and its usual Latin transliterations.

    посылка, posylka, posilka → "posilka"; доставка, dostavka → "dostavka"; щ/sch/shch → "s".
    Coarse on purpose: the Latin spellings people improvise differ in exactly these places.
    """
    s = "".join(_CYR_TO_LAT.get(ch, ch) for ch in token)
    for a, b in _SKELETON_STEPS:
        s = s.replace(a, b)
    return _DOUBLE.sub(r"\1", s)


def _is_cyrillic(ch: str) -> bool:
    return "\u0400" <= ch <= "\u04ff"


def script_share(text: str) -> tuple[int, int]:
    """(Cyrillic letters, Latin letters) in the text."""
    cyr = lat = 0
    for ch in text:
        if _is_cyrillic(ch):
            cyr += 1
        elif ch.isascii() and ch.isalpha():
            lat += 1
    return cyr, lat


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


def _translit_term(term: Term) -> Term | None:
    if not any(_is_cyrillic(ch) for p in term.parts for ch in p):
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


class _TermIndex:
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
            for t in self._fuzzy(tok):
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

    def _fuzzy(self, tok: str) -> list[Term]:
        out: list[Term] = []
        for n in self.fuzzy_lengths:
            for m in (n - 1, n, n + 1):
                if m > len(tok) or m < self.FUZZY_MIN - 1:
                    continue
                prefix = tok[:m]
                for key in _deletions(prefix):
                    for t in self.fuzzy.get(key, ()):
                        stem = t.parts[0]
                        # Typos rarely hit the first letter; requiring it avoids "price"/"prince".
                        # A whole-word term must match the whole word ("retrun" for "return$").
                        if (len(stem) == n and stem[0] == tok[0] and t not in out
                                and (not t.exact[0] or m == len(tok)) and _within_one_edit(prefix, stem)):
                            out.append(t)
        return out


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


# Words after which the message's real point usually follows ("the parcel came, BUT the jacket...").
_CONTRAST = frozenset(normalise(w) for w in (
    "but however unfortunately though although "
    "но однако зато "
    "але проте однак "
    "но обаче ама "
    "ale jednak niestety "
    "bet tačiau deja "
    "aber jedoch leider allerdings doch"
).split())
_CONTRAST_MULTIWORD = frozenset({("к", "сожалению"), ("на", "жаль"), ("за", "съжаление"),
                                  # "still": "I paid on Monday, the order is STILL 'processing'" is about delivery.
                                  ("immer", "noch"), ("noch", "immer"), ("до", "сих"), ("все", "още"),
                                  ("vis", "dar")})
_CONTRAST |= frozenset(normalise(w) for w in "still wciaz nadal досі".split())
# "only": "everything arrived, ONLY the scarf has a pulled thread" / "I'll pay now, ONLY tell me...".
_CONTRAST |= frozenset(normalise(w) for w in "only except nur только тільки само tylko tik".split())
# "the main thing": "delivery can wait, THE MAIN THING is: does the coat have a hood?"
_CONTRAST |= frozenset(normalise(w) for w in "главное головне основното najważniejsze svarbiausia hauptsache".split())
# Short conjunctions that are contrastive in one language and something else in another: Russian,
# Ukrainian and Bulgarian "а" ("the money is gone, а the order..."), Lithuanian "o" (Polish "o"
# is "about"). They count only when the message's language is known to be theirs.
_CONTRAST_BY_LANGUAGE = {"ru": frozenset({"а"}), "uk": frozenset({"а"}), "bg": frozenset({"а"}),
                         "lt": frozenset({"o"})}
FOCUS_WEIGHT = 1.6


def _focus_start(tokens: Sequence[str], language: str | None = None) -> int:
    """Index from which tokens get extra weight: after the last contrast word (if not at the very end)."""
    start = 0
    local = _CONTRAST_BY_LANGUAGE.get(language or "", frozenset())
    for i, tok in enumerate(tokens):
        if 0 < i < len(tokens) - 2 and (tok in _CONTRAST or tok in local
                                         or tuple(tokens[i:i + 2]) in _CONTRAST_MULTIWORD):
            start = i
    return start


# --------------------------------------------------------------------------------------------
# Features for the linear model


def ngram_features(tokens: Sequence[str]) -> set[str]:
    """Word skeletons, 5-letter prefixes, prefix bigrams and character 4-grams.

    Skeletons make Cyrillic training text useful for transliterated messages and let the
    Slavic languages share evidence (посылка / przesyłka / posylka share "silk").
    """
    feats: set[str] = set()
    prev = ""
    for tok in tokens:
        if tok == "¤":
            feats.add("w:¤")
            prev = "¤"
            continue
        if tok.isdigit():
            feats.add("d:" + ("3" if len(tok) == 3 else "n"))
            continue
        sk = skeleton(tok)
        feats.add("w:" + sk)
        p = sk[:5]
        feats.add("p:" + p)
        if prev:
            feats.add("b:" + prev + "_" + p[:4])
        prev = p[:4]
        padded = f"<{sk}>"
        if len(padded) > 4:
            for k in range(len(padded) - 3):
                feats.add(padded[k:k + 4])
    return feats


# --------------------------------------------------------------------------------------------
# Shipped data


def _load_yaml(text: str) -> Any:
    import yaml

    # libyaml's loader when the wheel has it.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(text, Loader=loader)


def parse_examples(text: str, language: str) -> list[Example]:
    """Training file (YAML): a mapping from category to a list of example messages."""
    data = _load_yaml(text) or {}
    if not isinstance(data, dict):
        raise ValueError(f"training data {language}: expected a mapping of category to messages")
    out: list[Example] = []
    for category, texts in data.items():
        for text_ in texts or ():
            if isinstance(text_, str) and text_.strip():
                out.append(Example(text_.strip(), str(category), None, language))
    return out


@lru_cache(maxsize=4)
def shipped_lexicon(data_dir: Path = DATA_DIR) -> tuple[Term, ...]:
    terms: list[Term] = []
    for path in sorted((data_dir / "lexicon").glob("*.ini")):
        terms.extend(parse_lexicon(path.read_text(encoding="utf-8"), path.stem))
    return tuple(terms)


def parse_labelled_lines(text: str) -> list[Example]:
    """Training file (JSON Lines, several languages): {"text", "category", "lang", "subject"?} a line."""
    out: list[Example] = []
    for line in text.splitlines():
        if line.strip():
            r = json.loads(line)
            out.append(Example(str(r["text"]).strip(), str(r["category"]), r.get("subject"), r.get("lang")))
    return out


def training_files(data_dir: Path = DATA_DIR) -> list[Path]:
    """train/<lang>.yaml, train/<lang>.<part>.yaml (en.chat.yaml is English) and train/*.jsonl, in one order."""
    return sorted(p for p in (data_dir / "train").glob("*.*") if p.suffix in (".yaml", ".jsonl"))


def parse_training_file(path: Path) -> list[Example]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return parse_labelled_lines(text)
    return parse_examples(text, path.stem.split(".")[0])


@lru_cache(maxsize=4)
def shipped_examples(data_dir: Path = DATA_DIR) -> tuple[Example, ...]:
    """The training set, every file of :func:`training_files`."""
    examples: list[Example] = []
    for path in training_files(data_dir):
        examples.extend(parse_training_file(path))
    return tuple(examples)


@lru_cache(maxsize=4)
def shipped_model(data_dir: Path = DATA_DIR) -> LinearModel | None:
    return load_model(data_dir)


def _coerce_example(item: Example | Mapping[str, Any] | Sequence[Any]) -> Example:
    if isinstance(item, Example):
        return item
    if isinstance(item, Mapping):
        return Example(str(item["text"]), str(item["category"]), item.get("subject"),
                       item.get("language") or item.get("lang"))
    text, category = item[0], item[1]
    return Example(str(text), str(category))


# --------------------------------------------------------------------------------------------
# The classifier


@dataclass(frozen=True)
class Evidence:
    """What one message offers the model: its features and the lexicon's view, for the reason.

    The n-grams are kept as sets with one shared value (``norm``) rather than a dict per message:
    scoring sums their weight rows first and scales once, which keeps a message's cost at that of
    the naive Bayes model this replaced.
    """

    grams: frozenset[str] | set[str]
    focus_grams: frozenset[str] | set[str]
    dense: dict[str, float]  # lexicon features
    norm: float
    focus_extra: float
    lexicon: dict[str, float]
    hits: list[dict[str, Any]]
    leaning: str | None
    stripped: bool
    translit: bool

    @property
    def features(self) -> dict[str, float]:
        out = dict.fromkeys(self.grams, self.norm)
        extra = self.focus_extra * self.norm
        for f in self.focus_grams:
            out[f] = out.get(f, 0.0) + extra
        out.update(self.dense)
        return out

    @property
    def words(self) -> frozenset[str]:
        return frozenset(f for f in self.grams if f.startswith("w:"))


@dataclass
class _Corrections:
    """Operators' corrections: a nearest-correction override and an online update of the weights."""

    items: list[tuple[frozenset[str], str, str]] = field(default_factory=list)  # (words, category, text)
    index: dict[str, list[int]] = field(default_factory=dict)
    overlay: dict[str, list[float]] = field(default_factory=dict)  # feature -> added weight per class


class Classifier:
    """Lexicon features + a linear model, for a configurable set of categories.

    categories: the configured ids; must contain the fallback ("other").
    keywords: extra lexicon terms from the config, ``{category: {language: [term, ...]}}``; a term
      is a word prefix ("refund" also hits "refunded"), "word$" for the whole word only, and
      "a * b" allows up to three words in between. New categories can be defined this way alone:
      the model scores them through their lexicon feature.
    extra_examples: labelled messages (operators' corrections); each counts at once, both as a
      nearest-correction override for near-identical messages and as an online update of the
      model's weights for the features it contains.
    threshold: below this (calibrated) probability the message goes to the fallback category.
    """

    def __init__(
        self,
        categories: Sequence[str] = DEFAULT_CATEGORIES,
        keywords: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
        extra_examples: Iterable[Example | Mapping[str, Any] | Sequence[Any]] = (),
        threshold: float = DEFAULT_THRESHOLD,
        fallback: str = FALLBACK,
        data_dir: Path = DATA_DIR,
        model: LinearModel | None = None,
    ):
        self.categories = tuple(dict.fromkeys(categories))
        if fallback not in self.categories:
            raise ValueError(f"the fallback category {fallback!r} must be one of the categories")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError("threshold must be between 0 and 1")
        self.fallback = fallback
        self.threshold = threshold
        self.data_dir = data_dir
        loaded = model or shipped_model(data_dir)
        if not shipped_lexicon(data_dir) or loaded is None:
            # A build that dropped the data files would otherwise categorise everything as "other".
            raise RuntimeError(f"classifier data missing: no lexicon/*.ini or {MODEL_FILE} under {data_dir}")
        self.model: LinearModel = loaded
        terms = [t for t in shipped_lexicon(data_dir) if t.category in self.categories]
        for category, per_language in (keywords or {}).items():
            if category not in self.categories:
                raise ValueError(f"keywords for unknown category {category!r}")
            for language, words in per_language.items():
                for word in words:
                    term = parse_term(word, category, CONFIG_KEYWORD_WEIGHT, language)
                    if term:
                        terms.append(Term(term.category, term.weight, term.parts, term.exact, language,
                                          f"config:{term.source}"))
        self._index = _TermIndex(terms)
        self._translit_index = _TermIndex(t for t in (_translit_term(x) for x in terms) if t)
        self._unmodelled = [c for c in self.categories if c not in self.model.classes]
        self._extra: list[Example] = []
        self._lock = threading.Lock()
        self._corrections = self._learn(_Corrections(), [_coerce_example(e) for e in extra_examples])

    # -- corrections ----------------------------------------------------------------------------

    def retrain(self, extra_examples: Iterable[Example | Mapping[str, Any] | Sequence[Any]]) -> None:
        """Add labelled examples (e.g. operators' corrections); the next classify() sees them.

        The new state is built aside and swapped in one assignment, so concurrent classify()
        calls see either the old or the new corrections, never half of them.
        """
        new = [_coerce_example(e) for e in extra_examples]
        with self._lock:
            self._corrections = self._learn(self._corrections, new)

    def _learn(self, old: _Corrections, new: list[Example]) -> _Corrections:
        unknown = sorted({e.category for e in new} - set(self.categories))
        if unknown:
            raise ValueError(f"examples with unknown categories: {', '.join(unknown)}")
        if not new:
            return old
        state = _Corrections(list(old.items), {w: list(ks) for w, ks in old.index.items()},
                             {f: list(w) for f, w in old.overlay.items()})
        for e in new:
            ev = self.evidence(e.text, e.subject, e.language)
            if ev.words:
                k = len(state.items)
                state.items.append((ev.words, e.category, e.text[:200]))
                for w in ev.words:
                    state.index.setdefault(w, []).append(k)
            if e.category in self.model.classes:
                self._online_update(state.overlay, ev.features, self.model.classes.index(e.category))
        self._extra = self._extra + new
        return state

    def _online_update(self, overlay: dict[str, list[float]], feats: Mapping[str, float], target: int) -> None:
        """A few logistic-loss gradient steps on one corrected example, in an overlay of the weights.

        Similar messages (sharing many n-grams) move towards the corrected category; the shipped
        weights stay untouched, so a restart with the stored corrections gives the same state.
        """
        n = len(self.model.classes)
        for _ in range(CORRECTION_STEPS):
            probs = softmax(self.model.logits(feats, overlay), self.model.temperature)
            if probs[target] >= CORRECTION_TARGET_PROBABILITY:
                return
            for f, v in feats.items():
                row = overlay.setdefault(f, [0.0] * n)
                for k in range(n):
                    row[k] += CORRECTION_LEARNING_RATE * v * ((1.0 if k == target else 0.0) - probs[k])

    @property
    def extra_examples(self) -> tuple[Example, ...]:
        return tuple(self._extra)

    # -- classification -------------------------------------------------------------------------

    def evidence(self, text: str, subject: str | None = None, language: str | None = None) -> Evidence:
        """The model's features for a message (also used to fit the model, so both see the same)."""
        options = self.model.options
        body = strip_quotes_and_signature(text or "")
        stripped = body != (text or "").strip()
        body = body[:MAX_CHARS]
        body_tokens = tokenize(body)
        subject_tokens = tokenize(clean_subject(subject)) if subject else []
        # A reply's subject is usually ours ("Re: Your refund"): it describes the old thread,
        # not what the customer is asking now, so it only counts a little.
        is_reply = is_reply_subject(subject)
        subject_factor = 0.3 if is_reply else 1.0

        lex: dict[str, float] = dict.fromkeys(self.categories, 0.0)
        hits: list[dict[str, Any]] = []
        use_translit = self._translit_active(body, language)
        for segment, factor in ((subject_tokens, subject_factor), (body_tokens, 1.0)):
            if not segment:
                continue
            focus = _focus_start(segment, language)
            found = self._index.matches(segment)
            if use_translit:
                found += self._translit_index.matches([skeleton(t) for t in segment])
            for term, start, _end, quality in _best_matches(found):
                w = term.weight * quality * factor * (FOCUS_WEIGHT if focus and start >= focus else 1.0)
                index = self._translit_index if term.translit else self._index
                if language and not index.listed_for(term, language) and not term.source.startswith("config:"):
                    w *= FOREIGN_TERM_FACTOR
                lex[term.category] += w
                hit = {"term": term.source, "category": term.category, "weight": round(w, 2),
                       "lang": term.language + ("-translit" if term.translit else "")}
                if quality < 1.0:
                    hit["near"] = segment[start]
                hits.append(hit)

        grams = ngram_features(body_tokens if is_reply else subject_tokens + body_tokens)
        focus = _focus_start(body_tokens, language)
        focus_grams = ngram_features(body_tokens[focus:]) if focus and options.focus_extra else set()
        # Unit length: a long email is no more certain than an SMS for having more n-grams.
        norm = 1.0 / math.sqrt(len(grams) + options.focus_extra ** 2 * len(focus_grams)) if grams else 0.0
        dense: dict[str, float] = {}
        leaning = _question_leaning(body, subject, lex, self.fallback)
        if options.lexicon:
            for c, v in lex.items():
                if v:
                    dense["lex:" + c] = options.lexicon_scale * math.log1p(v)
            if leaning:
                dense["ask:" + leaning] = 1.0
            if max((v for c, v in lex.items() if c != self.fallback), default=0.0) < 0.5:
                dense["lex:none"] = 1.0
        return Evidence(grams, focus_grams, dense, norm, options.focus_extra, lex, hits, leaning, stripped,
                        use_translit)

    def classify(self, text: str, subject: str | None = None, language: str | None = None,
                 channel: str | None = None) -> Classification:
        corrections = self._corrections
        model = self.model
        ev = self.evidence(text, subject, language)
        raw = model.score(ev.grams, ev.focus_grams, ev.dense, ev.norm, ev.focus_extra, corrections.overlay)
        logits = dict(zip(model.classes, raw, strict=True))
        for c in self._unmodelled:
            logits[c] = model.mean_intercept + model.own_lexicon_weight * math.log1p(ev.lexicon.get(c, 0.0)) * \
                model.options.lexicon_scale
        correction = self._correction(corrections, ev.words) if corrections.items else None
        if correction:
            target = correction[1] if correction[1] in logits else self.fallback
            logits[target] += CORRECTION_BOOST * correction[0]
        # A category this business dropped gives its probability to the fallback.
        model_probs = _softmax({c: v / model.temperature for c, v in logits.items()})
        probs: dict[str, float] = dict.fromkeys(self.categories, 0.0)
        for c, p in model_probs.items():
            probs[c if c in self.categories else self.fallback] += p
        best = max(probs, key=lambda c: probs[c])
        confidence = probs[best]
        category = best if confidence >= self.threshold else self.fallback
        reason: dict[str, Any] = {
            "method": "lexicon+linear_model",
            "decision": "best" if category == best else f"below threshold {self.threshold}: {best} → {category}",
            "best": best,
            "terms": sorted(ev.hits, key=lambda h: -h["weight"])[:10],
            "lexicon": {c: round(v, 2) for c, v in ev.lexicon.items() if v},
            "model": {c: round(p, 3) for c, p in probs.items()},
            "probabilities": {c: round(p, 3) for c, p in sorted(probs.items(), key=lambda kv: -kv[1])[:3]},
        }
        if ev.leaning:
            reason["question_about"] = ev.leaning
        if ev.stripped:
            reason["quoted_text_removed"] = True
        if ev.translit:
            reason["translit"] = True
        if correction:
            reason["similar_correction"] = {"category": correction[1], "similarity": round(correction[0], 2),
                                            "text": correction[2]}
        # On a fallback the confidence stays that of the best guess: low, which is why it is triage.
        return Classification(category, round(confidence, 4), reason)

    def _translit_active(self, body: str, language: str | None) -> bool:
        cyr, lat = script_share(body)
        if lat == 0 or cyr > lat:
            return False
        if language in CYRILLIC_LANGUAGES:
            return True
        if language is None:
            # Imported here because language.py imports this module (for the email clean-up).
            from services.router.language import translit_language

            return translit_language(body) is not None
        return False

    @staticmethod
    def _correction(state: _Corrections, words: frozenset[str]) -> tuple[float, str, str] | None:
        if not state.items or not words:
            return None
        overlap: Counter[int] = Counter()
        for w in words:
            for k in state.index.get(w, ()):
                overlap[k] += 1
        best: tuple[float, str, str] | None = None
        for k, n in overlap.items():
            cwords, cat, text = state.items[k]
            sim = n / math.sqrt(len(cwords) * len(words))
            if sim >= CORRECTION_MIN_SIMILARITY and (best is None or sim > best[0]):
                best = (sim, cat, text)
        return best


def _question_leaning(body: str, subject: str | None, lex: Mapping[str, float], fallback: str) -> str | None:
    """The one category a question's words point to, if exactly one does (and beats the fallback's cues).

    "Does the 3-in-1 jacket zip apart?" names a jacket and nothing else: in a shop that is a
    question about the product, not triage, even though one noun is weak evidence.
    """
    if "?" not in body and "?" not in (subject or ""):
        return None
    topical = [c for c, v in lex.items() if c != fallback and v > 0]
    if len(topical) != 1 or lex[topical[0]] <= lex.get(fallback, 0.0):
        return None
    return topical[0]


def _best_matches(found: list[tuple[Term, int, int, float]]) -> list[tuple[Term, int, int, float]]:
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


def _softmax(z: Mapping[str, float]) -> dict[str, float]:
    if not z:
        return {}
    m = max(z.values())
    ex = {c: math.exp(v - m) for c, v in z.items()}
    s = sum(ex.values())
    return {c: v / s for c, v in ex.items()}


def build_classifier(config: Any, extra_examples: Iterable[Example | Mapping[str, Any]] = (),
                     threshold: float = DEFAULT_THRESHOLD) -> Classifier:
    """The classifier for a loaded :class:`shared.config.Config` (its categories and keywords)."""
    categories = list(config.categories)
    keywords = {cid: dict(cat.keywords) for cid, cat in config.categories.items() if cat.keywords}
    return Classifier(categories=categories, keywords=keywords, extra_examples=extra_examples, threshold=threshold)
