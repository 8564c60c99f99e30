"""The customer's own words out of a message: one quote and signature stripper and one reply-prefix
cleaner, shared by the gateway (what it publishes as the e-mail's text) and the router (what language
detection and categorisation read, on every channel).

Everything here reads hostile text, so every regex runs in linear time, and the way that is kept:
- a line is stripped before it is matched, so no pattern needs `\\s*` at its ends (overlapping
  whitespace quantifiers are what made one line of spaces cost seconds);
- only lines of at most MAX_MARKER_LINE characters are matched against a marker pattern: no
  attribution, separator, header or sign-off is longer, and a longer line is the customer's text;
- the text is cut at MAX_TEXT_CHARS before anything is done with it;
- tests/unit/test_regex_safety.py refuses, in services/ and shared/, any pattern with nested or
  adjacent unbounded quantifiers over overlapping characters.
"""

from __future__ import annotations

import re

#: Longer text is cut before it is read: the gateway keeps no more of a mail body either.
MAX_TEXT_CHARS = 100_000
#: A line longer than this is never a quote marker, attribution, separator or sign-off.
MAX_MARKER_LINE = 300

# --- markers -------------------------------------------------------------------------------------
# Every pattern below is matched against a stripped line of at most MAX_MARKER_LINE characters.

#: "<someone> wrote:" in the languages we serve (and a few neighbours), at the end of the line. The
#: German one carries the name after the verb ("schrieb Northwind <…>:"); its run is bounded.
_ATTRIBUTION = re.compile(
    r"(?:(?:\bwrote|\bwrites|пишет|пише|написал\(а\)|написала|написал|написав\(ла\)|написав|написа"
    r"|napisał\(a\)|napisała|napisał|rašė|parašė|skrev|a écrit|escribió|ha scritto)\s*"
    r"|schrieb\b.{0,300}):$",
    re.IGNORECASE,
)
#: How a wrapped attribution begins (Gmail breaks long ones before the address): only then may two or
#: three lines be read as one, so that a sentence above an attribution is never taken for part of it.
_ATTRIBUTION_START = re.compile(r"(?:On|Am|W dniu|Le|El|Il|\d|\w{2,4}\.?,\s*\d)", re.IGNORECASE)
#: Russian/Ukrainian webmail writes "12.05.2025, 09:14, "Shop" <support@x>:" without a verb.
_DATE_OR_ADDRESS = re.compile(r"[\d@]")
_ORIGINAL_MESSAGE = re.compile(
    r"^-{2,}\s*(?:Original Message|Ursprüngliche Nachricht|Исходное сообщение|Оригинальное сообщение"
    r"|Оригінальне повідомлення|Вихідне повідомлення|Оригинално съобщение|Wiadomość oryginalna"
    r"|Oryginalna wiadomość|Originalus laiškas|Pradinis laiškas|Originali žinutė)\s*-{2,}",
    re.IGNORECASE,
)
_HEADER_FROM = re.compile(r"\*?(?:From|От|Від|Od|Von|Nuo|De|Van|Från)\s*:\*?\s*\S", re.IGNORECASE)
_HEADER_SENT = re.compile(
    r"\*?(?:Sent|Date|Отправлено|Дата|Надіслано|Изпратено|Wysłano|Data|Gesendet|Datum|Išsiųsta"
    r"|Enviado|Envoyé|Skickat)\s*:", re.IGNORECASE,
)
_SEPARATOR = re.compile(r"[-_=*]{3,}")

#: Footers mail apps add; only the app names, so "Sent from Berlin on 2 March" stays the customer's.
_MOBILE_FOOTER = re.compile(
    r"(?:Sent from (?:my |Mail for |Outlook|Yahoo Mail|Gmail|Samsung|iPhone|iPad|Android|AOL)"
    r"|Get Outlook for|Отправлено (?:с|из) (?:моего |мобильной |iPhone|iPad|Android|Почты|Mail)"
    r"|Надіслано з (?:мого |iPhone|iPad|Android)|Wysłane z (?:mojego |iPhone|iPad|Androida?|aplikacji)"
    r"|Von meinem .{1,60} gesendet|Gesendet von (?:meinem |iPhone|iPad|Android|Outlook)"
    r"|(?:Iš)?siųsta iš|Изпратено от (?:моя |iPhone|iPad|Android))", re.IGNORECASE,
)
_SIGN_OFF = re.compile(
    r"(?:best regards|kind regards|warm regards|regards|best wishes|best|cheers|thanks|thank you"
    r"|many thanks|thanks in advance|sincerely|yours sincerely|yours truly"
    r"|с уважением|с наилучшими пожеланиями|всего доброго|спасибо|заранее спасибо"
    r"|з повагою|щиро|дякую|заздалегідь дякую"
    r"|поздрави|с уважение|благодаря|хубав ден"
    r"|pozdrawiam|pozdrawiam serdecznie|serdecznie pozdrawiam|z poważaniem|pozdrowienia|dziękuję|dzięki"
    r"|z góry dziękuję"
    r"|pagarbiai|su pagarba|linkėjimai|geros dienos|ačiū|dėkoju|iš anksto dėkoju"
    r"|mit freundlichen grüßen|freundliche grüße|viele grüße|beste grüße|liebe grüße|herzliche grüße"
    r"|grüße|gruß|mfg|lg|vg|danke|vielen dank)(?:\s*[,.!])?",
    re.IGNORECASE,
)
_SIGNATURE_MAX_LINES = 6  # a sign-off counts only when followed by at most this many short lines
_SIGNATURE_MAX_WIDTH = 60


def _marker(pattern: re.Pattern[str], line: str) -> bool:
    """Whether the whole stripped line is the marker; a line too long to be one is never matched."""
    probe = line.strip()
    return len(probe) <= MAX_MARKER_LINE and pattern.fullmatch(probe) is not None


def _starts(pattern: re.Pattern[str], line: str) -> bool:
    """Whether the stripped line begins with the marker (bounded like _marker)."""
    probe = line.strip()
    return len(probe) <= MAX_MARKER_LINE and pattern.match(probe) is not None


def _quoted(line: str) -> bool:
    return line.lstrip().startswith(">")


def normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def strip_quotes_and_signature(text: str) -> str:
    """The sender's new words: quoted earlier mail and the signature removed.

    Quoting is recognised by its markers, not guessed: ">" lines; an attribution line ("On … wrote:",
    "… пишет:", "W dniu … napisał(a):", "… rašė:", "Am … schrieb …:", "… написав:", "… написа:", or any
    line ending in ":" that is followed by ">" lines) that carries a date or an address; Outlook's
    "-----Original Message-----" and its From:/Sent: header block. An attribution followed by ">" lines
    is removed with them and reading goes on (the sender may answer below or between the quotes);
    anything else ends the new text. The signature goes after "-- ", a mobile footer ("Sent from my
    iPhone") or a sign-off ("Pozdrawiam,") followed only by a few short lines. When nothing is left —
    a bare forward — the whole text is returned: something to categorise beats nothing.
    """
    text = normalise_newlines((text or "")[:MAX_TEXT_CHARS])
    if "\n" not in text:
        # One line (most chat messages) is all content whatever it looks like: what the walk below
        # gives it, without the walk.
        return text.strip()
    lines = [line.rstrip() for line in text.split("\n")]
    kept: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if _quoted(line):
            i += 1
            continue
        span = _attribution_span(lines, i)
        if span:
            after = _next_nonblank(lines, i + span)
            if after is not None and _quoted(lines[after]):
                i += span
                continue
            if _ATTRIBUTION.search(_joined(lines, i, span)):
                break  # top-posted reply with an unquoted old thread below
        if _marker(_ORIGINAL_MESSAGE, line) or _header_block(lines, i):
            break
        kept.append(line)
        i += 1
    kept = _strip_signature(kept)
    while kept and (not kept[-1].strip() or _marker(_SEPARATOR, kept[-1])):
        kept.pop()
    result = _squeeze_blank_lines(kept).strip()
    return result if result else text.strip()


def _joined(lines: list[str], i: int, span: int) -> str:
    return " ".join(part.strip() for part in lines[i:i + span])


def _attribution_span(lines: list[str], i: int) -> int:
    """How many lines (1-3) starting at i form an attribution line; 0 if none does."""
    first = lines[i].strip()
    if not first or len(first) > MAX_MARKER_LINE:
        return 0
    for span in (1, 2, 3):
        if i + span > len(lines):
            break
        if span > 1:
            if not _ATTRIBUTION_START.match(first) or not lines[i + span - 1].strip():
                break
        if sum(len(part) for part in lines[i:i + span]) > 3 * MAX_MARKER_LINE:
            break
        joined = _joined(lines, i, span)
        if len(joined) > MAX_MARKER_LINE:
            break
        if not _DATE_OR_ADDRESS.search(joined):
            continue
        if _ATTRIBUTION.search(joined):
            return span
        if joined.endswith(":"):
            # Any language: "пн, 5 янв. 2026 г. в 10:00, Иван <ivan@x.ru>:" — counts only if quotes follow.
            after = _next_nonblank(lines, i + span)
            if after is not None and _quoted(lines[after]):
                return span
    return 0


def _next_nonblank(lines: list[str], start: int) -> int | None:
    for j in range(start, len(lines)):
        if lines[j].strip():
            return j
    return None


def _header_block(lines: list[str], i: int) -> bool:
    """Outlook's unquoted reply header: "From: …" with a "Sent:"/"Date:" line within the next four."""
    if not _starts(_HEADER_FROM, lines[i]):
        return False
    return any(_starts(_HEADER_SENT, line) for line in lines[i + 1:i + 5])


def _strip_signature(lines: list[str]) -> list[str]:
    nonblank = [j for j, line in enumerate(lines) if line.strip()]
    if len(nonblank) < 2:
        return lines  # a one-line message is all content, whatever it looks like
    first = nonblank[0]
    # "-- ": the signature delimiter (trailing space often lost); only near the end, as a delimiter
    # with pages below it is a separator inside the message.
    for n, j in enumerate(nonblank):
        if j > first and lines[j].strip() == "--" and len(nonblank) - n - 1 <= 15:
            return lines[:j]
    for j in nonblank[-3:]:
        if j > first and len(lines[j].strip()) <= 80 and _starts(_MOBILE_FOOTER, lines[j]):
            lines = lines[:j]
            nonblank = [k for k in nonblank if k < j]
            break
    # A sign-off counts only when nothing but a few short lines (name, phone, company) follows it:
    # walk up from the end while the lines are short; the highest sign-off found starts the signature.
    cut = None
    for n in range(len(nonblank) - 1, max(-1, len(nonblank) - 2 - _SIGNATURE_MAX_LINES), -1):
        j = nonblank[n]
        if j > first and _marker(_SIGN_OFF, lines[j]):
            cut = j
        if len(lines[j].strip()) > _SIGNATURE_MAX_WIDTH:
            break
    return lines[:cut] if cut is not None else lines


def _squeeze_blank_lines(lines: list[str]) -> str:
    out: list[str] = []
    for line in lines:
        if not line.strip() and out and not out[-1].strip():
            continue
        out.append(line)
    return "\n".join(out)


# --- subjects --------------------------------------------------------------------------------------

#: "Re: ", "AW: ", "Fwd[2]: ", "Odp: " … repeated; each may carry a counter ("Re[3]:").
_REPLY_PREFIX = re.compile(
    r"(?:(?:re|fw|fwd|aw|wg|sv|odp|ats|отв|пересл|vs|tr)\s*(?:\[\d{1,9}\]\s*)?:\s*)+", re.IGNORECASE,
)


#: A tag a receiving server or mail gateway puts before the subject: "[SPAM]", "[External]",
#: "***SPAM***". The star runs are possessive and need a word between them, so a run of stars is
#: read one way only (tests/unit/test_regex_safety.py refuses two runs that may meet). Anchored, and
#: matched against at most MAX_MARKER_LINE characters from where the tag would start.
_SERVER_TAG = re.compile(r"^(?:\[[^\]\n]{0,40}\]|\*{3,}+[^*\n]{1,20}\*{3,}+)")


def clean_subject(subject: str, *, server_tags: bool = False) -> str:
    """The subject without its reply and forward prefixes.

    With ``server_tags`` the tags servers add ("[SPAM] Fw: ***SPAM*** Re: ...") go too, in any
    order with the prefixes: the gateway's automatic-mail check reads what the sender wrote. The
    router's categoriser keeps them (they are words of the subject it was trained on).
    """
    stripped = (subject or "").lstrip()
    if not server_tags:
        found = _REPLY_PREFIX.match(stripped)
        return stripped[found.end():] if found else stripped
    # A position, not a shorter copy per step: a subject of 100 k tags is read once; a tag is looked
    # for in a window of MAX_MARKER_LINE characters only (no tag is longer).
    position = 0
    while True:
        if found := _REPLY_PREFIX.match(stripped, position):
            position = found.end()
        elif tag := _SERVER_TAG.match(stripped[position:position + MAX_MARKER_LINE]):
            position += tag.end()
        else:
            break
        while position < len(stripped) and stripped[position].isspace():
            position += 1
    return stripped[position:]


def is_reply_subject(subject: str | None) -> bool:
    return bool(subject and _REPLY_PREFIX.match(subject.lstrip()))


__all__ = ["MAX_TEXT_CHARS", "MAX_MARKER_LINE", "strip_quotes_and_signature", "clean_subject", "is_reply_subject",
           "normalise_newlines"]
