"""The categoriser's view of text: normalisation, tokens, the transliteration skeleton, where a
message's point lies (after "but"/"still"/"the main thing") and the n-gram features of the linear model.

Pure functions, shared by the lexicon matcher (:mod:`services.router.classifier_lexicon`), the
classifier (:mod:`services.router.classifier`) and the trainer.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache

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


def is_cyrillic(ch: str) -> bool:
    return "\u0400" <= ch <= "\u04ff"


def script_share(text: str) -> tuple[int, int]:
    """(Cyrillic letters, Latin letters) in the text."""
    cyr = lat = 0
    for ch in text:
        if is_cyrillic(ch):
            cyr += 1
        elif ch.isascii() and ch.isalpha():
            lat += 1
    return cyr, lat


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


def focus_start(tokens: Sequence[str], language: str | None = None) -> int:
    """Index from which tokens get extra weight: after the last contrast word (if not at the very end)."""
    start = 0
    local = _CONTRAST_BY_LANGUAGE.get(language or "", frozenset())
    for i, tok in enumerate(tokens):
        if 0 < i < len(tokens) - 2 and (tok in _CONTRAST or tok in local
                                         or tuple(tokens[i:i + 2]) in _CONTRAST_MULTIWORD):
            start = i
    return start



_SENTENCE_ENDS = ".!?\n"


def last_question(body: str) -> str | None:
    """The last sentence that ends in a question mark, when the message has more before it.

    Plain string scans (rfind), no regex: linear in the message's length whatever it holds."""
    q = body.rfind("?")
    if q < 0:
        return None
    end = q
    while end > 0 and body[end - 1] == "?":  # "??" and "?!?" end one question
        end -= 1
    start = max(body.rfind(c, 0, end) for c in _SENTENCE_ENDS) + 1
    if not body[:start].strip():
        return None  # the question is the whole message: nothing to focus away from
    return body[start:end]


# --------------------------------------------------------------------------------------------
# Features for the linear model


def ngram_features(tokens: Sequence[str], char5: bool = False) -> set[str]:
    """Word skeletons, 5-letter prefixes, prefix bigrams and character 4-grams (and 5-grams if asked).

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
            if char5:
                for k in range(len(padded) - 4):
                    feats.add(padded[k:k + 5])
    return feats

