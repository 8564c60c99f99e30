"""Detects which of the configured languages a customer wrote in.

`detect_language` runs lingua restricted to the configured languages (ISO 639-1 codes; a
detector is built once per language set and cached, building takes most of a second), and adds
what lingua cannot know about support traffic:

* channel hints (a Telegram ``language_code`` such as "ru" or "pt-br", or a language the caller
  derived from a phone number's country) decide when the text is too short or ambiguous ("ok",
  "?", an order number) and break near-ties;
* the script narrows the choice (Cyrillic text is Russian, Ukrainian or Bulgarian), and letters
  and function words only one of those languages has (і ї є ґ; ы э ё; "къде", "що") settle short
  messages where lingua hesitates;
* Russian, Ukrainian or Bulgarian typed in Latin letters ("gde moya posylka", "de moie
  zamovlennia", "kude e poruchkata") is recognised by a small lexicon of transliterated words;
* quoted replies are ignored, so a German reply to our English acknowledgement is German.

Anything undecidable falls back to the hint, then to the default language.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from lingua import IsoCode639_1, Language, LanguageDetector, LanguageDetectorBuilder

from shared.text import strip_quotes_and_signature
from shared.vocabulary import COUNTRY_LANGUAGE
from shared.vocabulary import CYRILLIC_LANGUAGES as CYRILLIC

# A channel hint is an IETF tag ("pt-BR", "uk_UA"); these are common mistakes for a language code.
_HINT_ALIASES = {"ua": "uk", "by": "ru", "cz": "cs", "gr": "el", "se": "sv", "dk": "da", "jp": "ja", "ee": "et"}

# Messages that are the same in every language: decided by the hint or the default.
_UNIVERSAL = frozenset("""
ok okay okey k kk hi hello hey hallo halo yes no yep nope thanks thx ty stop start help test ?
ок окей hi5 lol xd super супер
""".split())

_WORD = re.compile(r"[^\W\d_]+")

# Letters that exist in one Cyrillic alphabet only.
_UK_LETTERS = frozenset("іїєґ")
_RU_LETTERS = frozenset("ыэё")
# Frequent short words that, among ru/uk/bg, belong to one language.
_CYRILLIC_MARKERS = {
    "ru": frozenset("""где что это как когда уже меня мне нет пожалуйста спасибо мой моя моё мое есть или только
        здравствуйте привет почему можно нужно хочу вы ваш ваше сейчас сегодня ещё еще очень заказ посылка
        посылку вернуть деньги который которая будет был была было если чтобы тоже""".split()),
    "uk": frozenset("""де що це як коли вже мене мені немає нема будь ласка дякую мій моя моє чи та або тільки
        вітаю привіт чому можна потрібно хочу ви ваш ваше зараз сьогодні ще дуже замовлення посилка посилку
        повернути гроші який яка буде був була було якщо щоб також добрий""".split()),
    "bg": frozenset("""къде какво кога вече мен ми не е са съм ще моля благодаря здравейте здрасти защо може
        трябва искам вие ваш вашата сега днес още много поръчка поръчката пратка пратката върна парите
        който която беше ако за да на от""".split()),
}
# Transliterated words typical of one language and unlikely in English, Polish, Lithuanian or German.
_TRANSLIT_MARKERS = {
    "ru": frozenset("""gde kogda pochemu pochemy chto shto 4to eto kak mne menya moy moya moyu moe moego vash vashe
        nuzhno nado mozhno hochu khochu spasibo pozhaluysta pozhalujsta pozhalusta zdravstvuyte zdravstvujte
        zdravstvuite privet dobryy dobryj dobriy uzhe eshche eshe esche seychas segodnya zavtra vchera ochen tolko
        zakaz zakaza zakazu posylka posylku posilka dostavka dostavki oplata oplatil oplatila vozvrat vernut
        dengi nichego nikto skolko razmer tovar deneg pishet prishel prishla prishlo poluchil poluchila rabotaet
        sayt prilozhenie oshibka oshibku bolshoe bolshoye vsyo luchshie kurtka platye plate cvete chernom
        kogo nedelyu zhdu obnovlyaetsya zayti mogu podoshel oformit spisali lichnom kabinete oplachen
        dlya skidka skidku poyavilas ili esli chtoby tozhe opyat kupit kupil kupila pomogite podskazhite
        skazhite sdelat zdes vot budet byl byla bylo tovara zakazat zakazal zakazala nikak""".split()),
    "uk": frozenset("""shcho shcho scho tse yak koly vzhe mene meni moie moye moia moya miy mii dyakuyu diakuiu dyakuju
        bud laska zamovlennia zamovlennya zamovlenya zamovliala zamovlyala povernennia povernennya povernuty
        hroshi groshi nemaie nemaye nema chy tomu dniv pyshe mozhu dodatok pomylka otrymala otrymav naikrashchi
        dobryi vitayu vitaiu pryvit tsia tsei kolir koliori koliori rozmir ye oplatyv oplatyla spysaly
        chornomu oformyty pidiishov suknyu duzhe zaity dlia znyzhka znyzhku zastosuvalas oplati abo treba
        potribno skilky koshtuie koshtuye mozhna mozhete dopomozhit pidkazhit prosymo bud-laska""".split()),
    "bg": frozenset("""kude kyde kade kakvo koga veche mersi blagodarya blagodaria molya zdraveite zdraveyte zdrasti
        iskam poruchka porachka poruchkata porachkata poruchah pratka pratkata plashtane parite kolko struva
        shte tozi tazi tova nishto nyama niama greshka saita sayta vlyaza vliaza prilozhenieto cvyat cviat
        cvqt chanta roklyata vurna varna vrashtane vsichko tochno gotini platih platena iztegleni predi
        moga izliza servera imate otstapka otstupka pokaza plashtaneto kazhete pomognete tuk koya koi
        mozhe moje poruchkata smenya smenia nomer nomera dunki dunkite stoyat stoiat obuvki yaketo""".split()),
}


@dataclass(frozen=True)
class LanguageGuess:
    code: str
    confidence: float
    reason: str


def normalise_hint(hint: str | None) -> str | None:
    """ "pt-BR" → "pt", "uk_UA" → "uk", "RU" → "ru"; None for empty or malformed hints."""
    if not hint or not isinstance(hint, str):
        return None
    # A language tag is short; a long "hint" (the contract does not bound it) is not kept.
    return _normalised(hint) if len(hint) <= 35 else _normalised.__wrapped__(hint)


@lru_cache(maxsize=1024)
def _normalised(hint: str) -> str | None:
    # Cached: every message normalises the configured languages and its channel's hint, and
    # they are a handful of distinct strings.
    code = re.split(r"[-_]", hint.strip().lower(), maxsplit=1)[0]
    if not re.fullmatch(r"[a-z]{2,3}", code):
        return None
    return _HINT_ALIASES.get(code, code)


def language_for_country(region: str | None, languages: Iterable[str]) -> str | None:
    """The configured language of a phone number's country (phonenumbers' region code), if any."""
    lang = COUNTRY_LANGUAGE.get((region or "").upper())
    return lang if lang in set(languages) else None


@lru_cache(maxsize=32)
def _detector(codes: frozenset[str]) -> LanguageDetector:
    langs = [Language.from_iso_code_639_1(IsoCode639_1.from_str(c)) for c in sorted(codes)]
    # Preloading keeps the first real message from paying for the model load.
    return LanguageDetectorBuilder.from_languages(*langs).with_preloaded_language_models().build()


def _lingua_codes(languages: Iterable[str]) -> frozenset[str]:
    return _known_to_lingua(tuple(languages))


@lru_cache(maxsize=256)
def _known_to_lingua(languages: tuple[str, ...]) -> frozenset[str]:
    out = set()
    for code in languages:
        try:
            Language.from_iso_code_639_1(IsoCode639_1.from_str(code))
        except (ValueError, AttributeError):
            continue
        out.add(code)
    return frozenset(out)


def warm_up(languages: Sequence[str]) -> None:
    """Build (and cache) the detector now rather than on the first message."""
    codes = _lingua_codes(languages)
    if codes:
        _detector(codes)


def translit_language(text: str, allowed: Iterable[str] = CYRILLIC, min_hits: int = 0) -> str | None:
    """ "ru", "uk" or "bg" when Latin-letter text reads as that language transliterated, else None.

    ``min_hits`` > 0 accepts the best language on that many marker words alone (for a hinted language).
    """
    words = [w for w in _WORD.findall(text.lower()) if w.isascii()]
    if not words:
        return None
    distinct = set(words)
    counts = {lang: 0 for lang in allowed if lang in _TRANSLIT_MARKERS}
    if not counts:
        return None
    for word in distinct:
        for lang in _translit_hits(word) if len(word) <= _CACHED_WORD else _translit_hits.__wrapped__(word):
            if lang in counts:
                counts[lang] += 1
    best = max(counts, key=lambda lang: (counts[lang], lang == "ru"))
    n = counts[best]
    if n >= 3 or (n >= 2 and n >= 0.25 * len(distinct)) or (n >= 1 and len(distinct) <= 2):
        return best
    if min_hits and n >= min_hits:
        return best
    return None


#: Words up to this long have their marker hits cached (`_translit_hits`): the longer, the rarer.
_CACHED_WORD = 32


@lru_cache(maxsize=8192)
def _translit_hits(word: str) -> tuple[str, ...]:
    """The languages whose transliterated markers the word is (or inflects): cached, because
    customers' words repeat and each costs a prefix look-up per length and language."""
    return tuple(lang for lang, markers in _TRANSLIT_MARKERS.items() if _marker_hit(word, markers))


def _marker_hit(word: str, markers: frozenset[str]) -> bool:
    """Exact, or for longer markers an inflected form of one ("posylku" for "posylk...")."""
    if word in markers:
        return True
    return any(word[:k] in markers for k in range(6, len(word)))


def _cyrillic_markers(words: Sequence[str], candidates: Iterable[str]) -> dict[str, float]:
    text = "".join(words)
    bonus = dict.fromkeys(candidates, 0.0)
    if "uk" in bonus and any(ch in _UK_LETTERS for ch in text):
        bonus["uk"] += 1.0
    if "ru" in bonus and any(ch in _RU_LETTERS for ch in text):
        bonus["ru"] += 1.0
    distinct = set(words)
    for lang in bonus:
        hits = len(distinct & _CYRILLIC_MARKERS.get(lang, frozenset()))
        bonus[lang] += 0.25 * hits
    return bonus


# The letters `_letters` counts, as character classes: counted by the regex engine in C instead of
# a Python loop over every character (the same counts: every character of these ranges but the
# non-letters left out is a letter by str.isalpha, and no other is).
_CYRILLIC_LETTER = re.compile("[\u0400-\u0481\u048a-\u04ff]")
_LATIN_LETTER = re.compile("[A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f]")


def _letters(text: str) -> tuple[int, int]:
    """How many Cyrillic and how many Latin letters the text has."""
    return len(_CYRILLIC_LETTER.findall(text)), len(_LATIN_LETTER.findall(text))


#: A text of at most this many letters and spaces (its words joined) is short: most chat messages.
_SHORT_TEXT = 80


def _confidences(codes: frozenset[str], body: str, words: Sequence[str]) -> tuple[tuple[str, float], ...]:
    """lingua's confidence per language. lingua reads only a text's letters, by word (its values
    for the words joined by spaces equal those for the text, to 1e-12 over the 6 700 messages of
    the classifier's data), so a short text is looked up by its words: the same question in chat
    ("where is my parcel? order 4821", "… order 4822") is asked of lingua once."""
    joined = " ".join(words)
    if len(joined) <= _SHORT_TEXT:
        return _short_confidences(codes, joined)
    return _lingua_confidences(codes, body)


@lru_cache(maxsize=4096)
def _short_confidences(codes: frozenset[str], joined: str) -> tuple[tuple[str, float], ...]:
    return _lingua_confidences(codes, joined)


def _lingua_confidences(codes: frozenset[str], text: str) -> tuple[tuple[str, float], ...]:
    return tuple((cv.language.iso_code_639_1.name.lower(), float(cv.value))
                 for cv in _detector(codes).compute_language_confidence_values(text))


@lru_cache(maxsize=64)
def _configured(languages: tuple[str, ...]) -> tuple[str, ...]:
    """The configured languages normalised, in order, once per language list (not per message)."""
    return tuple(c for c in dict.fromkeys(normalise_hint(x) for x in languages) if c)


def detect_language(text: str, languages: Sequence[str], default: str, hints: Iterable[str] = ()) -> LanguageGuess:
    """The configured language the text is written in, with a confidence and a short reason."""
    configured = _configured(tuple(languages))
    if not configured:
        return LanguageGuess(default, 0.0, "no languages configured: default")
    valid_hints = [h for h in (normalise_hint(x) for x in hints) if h and h in configured]
    hint = valid_hints[0] if valid_hints else None
    fallback = hint or (default if default in configured else configured[0])
    fallback_why = f"hint {hint}" if hint else f"default {fallback}"

    body = strip_quotes_and_signature(text or "") or (text or "")
    words = _WORD.findall(body.lower())
    letters = sum(len(w) for w in words)
    if letters < 3 or all(w in _UNIVERSAL for w in words):
        return LanguageGuess(fallback, 0.5 if hint else 0.3, f"too short to tell: {fallback_why}")
    if len(configured) == 1:
        return LanguageGuess(configured[0], 1.0, "only one language configured")

    cyr, lat = _letters(body)
    if cyr > lat:
        candidates = [c for c in configured if c in CYRILLIC]
    else:
        candidates = [c for c in configured if c not in CYRILLIC]
        translit_allowed = [c for c in configured if c in CYRILLIC]
        if translit_allowed and lat:
            translit = translit_language(body, translit_allowed)
            if translit:
                return LanguageGuess(translit, 0.8, f"{translit} written in Latin letters")
            if hint in translit_allowed and translit_language(body, [hint], min_hits=1):
                # A Bulgarian Telegram user writing "moje li da gi smenya": one telling word is
                # enough when the channel already says Bulgarian.
                return LanguageGuess(hint, 0.6, f"{hint} written in Latin letters (hint {hint})")
    if not candidates:
        candidates = list(configured)
    if len(candidates) == 1:
        return LanguageGuess(candidates[0], 0.9, "the only configured language in this script")

    codes = _lingua_codes(candidates)
    scores = dict.fromkeys(candidates, 0.0)
    if len(codes) >= 2:
        for code, value in _confidences(codes, body, words):
            if code in scores:
                scores[code] = value
    if cyr > lat:
        for lang, bonus in _cyrillic_markers(words, candidates).items():
            scores[lang] += bonus
    total = sum(scores.values())
    if total <= 0:
        return LanguageGuess(fallback, 0.3, f"no signal in the text: {fallback_why}")
    ranked = sorted(scores, key=lambda c: -scores[c])
    best = ranked[0]
    confidence = scores[best] / total
    if hint and hint in scores and hint != best:
        # A hint can only tip a close call: it must be plausible from the text itself.
        short = letters < 15
        if scores[hint] >= (0.2 if short else 0.6) * scores[best]:
            return LanguageGuess(hint, round(scores[hint] / total, 3),
                                 f"text is ambiguous ({best} {confidence:.2f}): hint {hint}")
    if confidence < 0.35 and hint is None and default in scores and scores[default] >= 0.5 * scores[best]:
        return LanguageGuess(default, round(scores[default] / total, 3), f"text is ambiguous: default {default}")
    return LanguageGuess(best, round(confidence, 3), "text")
