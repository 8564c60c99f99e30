"""One home for each piece of knowledge: the vocabularies (languages, categories, weekdays, the
country → language hints) live in shared/vocabulary.py, phone numbers are read in shared/phone.py,
quoted mail and reply prefixes are recognised in shared/text.py, the "[SB-…]" conversation reference
in shared/reference.py, and an hours table is loaded by one WeeklyHoursSchema.

Read from the code (like test_boundaries): a second literal copy of one of these lists, a second
E.164 reader or a second hours schema anywhere in services/ or shared/ fails here, naming the place.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared import vocabulary
from shared.locale import missing_words
from shared.phone import country_language, to_e164

ROOT = Path(__file__).resolve().parents[2]

#: Copies known to remain, each with whose it is; an entry that is no longer a copy fails too, so
#: the list only shrinks. Empty now: add a copy here only with the reason it must stay.
KNOWN_COPIES: set[tuple[str, str]] = set()


def sources() -> Iterator[tuple[str, ast.Module]]:
    for top in ("services", "shared"):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            yield rel, ast.parse(path.read_text(encoding="utf-8"), rel)


def string_elements(node: ast.AST) -> frozenset[str] | None:
    """The strings of a tuple/list/set literal made only of string constants, else None."""
    if not isinstance(node, ast.Tuple | ast.List | ast.Set) or not node.elts:
        return None
    values = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return frozenset(values) if len(values) == len(node.elts) else None


VOCABULARIES = {
    "LANGUAGES": frozenset(vocabulary.LANGUAGES),
    "CYRILLIC_LANGUAGES": frozenset(vocabulary.CYRILLIC_LANGUAGES),
    "CATEGORIES": frozenset(vocabulary.CATEGORIES),
    "WEEKDAYS": frozenset(vocabulary.WEEKDAYS),
}


def copies_in(tree: ast.AST) -> set[str]:
    """Which vocabularies a module spells out again."""
    found = set()
    for node in ast.walk(tree):
        values = string_elements(node)
        found |= {name for name, vocab in VOCABULARIES.items() if values == vocab}
        if isinstance(node, ast.Dict):
            pairs = {(k.value, v.value) for k, v in zip(node.keys, node.values, strict=True)
                     if isinstance(k, ast.Constant) and isinstance(v, ast.Constant)}
            if len(pairs & set(vocabulary.COUNTRY_LANGUAGE.items())) >= 5:
                found.add("COUNTRY_LANGUAGE")
            keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
            if keys >= set(vocabulary.LANGUAGES):
                found.add("TRANSLATIONS_IN_PYTHON")  # words belong in <language>.yaml files
    return found


def vocabulary_copies() -> set[tuple[str, str]]:
    return {(rel, name) for rel, tree in sources() if rel != "shared/vocabulary.py" for name in copies_in(tree)}


def test_each_vocabulary_is_written_once() -> None:
    copies = vocabulary_copies()
    assert copies - KNOWN_COPIES == set(), "import these from shared.vocabulary instead of copying them"
    assert KNOWN_COPIES - copies == set(), "no longer a copy: take it off KNOWN_COPIES"


def test_the_scan_finds_a_copy() -> None:
    # The scan itself: a literal copy in any order, or a country map sharing five entries, is found.
    tree = ast.parse('X = ["sun", "sat", "fri", "thu", "wed", "tue", "mon"]\n'
                     'Y = {"PL": "pl", "DE": "de", "UA": "uk", "LT": "lt", "BG": "bg", "FR": "fr"}\n'
                     'Z = ("en", "ru", "bg")\n'
                     'W = {"en": "Hi", "ru": "Привет", "bg": "Здравей", "pl": "Cześć", "lt": "Labas", "uk": "Привіт", '
                     '"de": "Hallo"}')
    assert copies_in(tree) == {"WEEKDAYS", "COUNTRY_LANGUAGE", "TRANSLATIONS_IN_PYTHON"}


@pytest.mark.parametrize("folder", ["services/gateway/locale", "services/notifier/locale"])
def test_every_language_has_the_same_words(folder: str) -> None:
    assert missing_words(ROOT / folder) == {}


def test_a_missing_word_is_named(tmp_path: Path) -> None:
    for language in vocabulary.LANGUAGES:
        (tmp_path / f"{language}.yaml").write_text("page: {title: T, send: S}\n", encoding="utf-8")
    (tmp_path / "lt.yaml").write_text("page: {title: T, sent: S}\n", encoding="utf-8")
    assert missing_words(tmp_path) == {"lt": ["page.send", "page.sent"]}


def test_the_old_names_are_the_shared_objects() -> None:
    from services.router import classifier, classify_cmd, kpis, language
    from shared import calendar, config, locale

    assert config.SUPPORTED_LANGUAGES is vocabulary.LANGUAGES is locale.LANGUAGES is classify_cmd.SUPPORTED_LANGUAGES
    assert config.DEFAULT_CATEGORIES is vocabulary.CATEGORIES is classifier.DEFAULT_CATEGORIES
    assert calendar.WEEKDAYS is vocabulary.WEEKDAYS is locale.WEEKDAYS is kpis.WEEKDAYS
    assert language.CYRILLIC is vocabulary.CYRILLIC_LANGUAGES is classifier.CYRILLIC_LANGUAGES
    assert language.COUNTRY_LANGUAGE is vocabulary.COUNTRY_LANGUAGE


def test_phone_numbers_are_read_only_in_shared_phone() -> None:
    readers = sorted(rel for rel, tree in sources() for node in ast.walk(tree)
                     if isinstance(node, ast.Attribute) and node.attr in {"format_number", "is_valid_number",
                                                                           "is_possible_number", "parse"}
                     and isinstance(node.value, ast.Name) and node.value.id == "phonenumbers"
                     and rel != "shared/phone.py")
    assert readers == []


def test_one_weekly_hours_schema() -> None:
    homes = sorted(f"{rel}:{node.name}" for rel, tree in sources() for node in ast.walk(tree)
                   if isinstance(node, ast.ClassDef)
                   and {t.id for s in node.body if isinstance(s, ast.Assign) for t in s.targets
                        if isinstance(t, ast.Name)} >= set(vocabulary.WEEKDAYS))
    assert homes == ["shared/config.py:WeeklyHoursSchema"]


def test_one_quote_stripper() -> None:
    # The markers of quoted mail are spelled in shared/text.py only (docstrings may describe them).
    spelled = set()
    for rel, tree in sources():
        docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
        if rel != "shared/text.py" and any(
                isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
                and ("Original Message" in node.value or "napisał" in node.value) for node in ast.walk(tree)):
            spelled.add(rel)
    assert spelled == set()


#: Regexes with one home: a pattern containing the marker (case-folded) anywhere else is a copy.
PATTERN_HOMES = {"sb-": "shared/reference.py",  # the "[SB-…]" conversation reference
                 "fwd": "shared/text.py"}  # the reply and forward prefixes ("Re:", "AW:", "Odp:" …)


def pattern_copies(root: Path) -> list[str]:
    from tests.support.regex_lint import patterns_in

    return sorted(f"{f.where} ({marker})" for f in patterns_in(root, ("services", "shared"))
                  for marker, home in PATTERN_HOMES.items()
                  if isinstance(f.pattern, str) and marker in f.pattern.lower() and not f.where.startswith(f"{home}:"))


def test_one_reader_of_subjects_and_conversation_references() -> None:
    assert pattern_copies(ROOT) == []


def test_a_second_reference_pattern_is_found(tmp_path: Path) -> None:
    (tmp_path / "services").mkdir()
    (tmp_path / "shared").mkdir()
    (tmp_path / "services" / "x.py").write_text('import re\nREF = re.compile(r"\\[(SB-[A-Z2-7]{10})\\]")\n')
    assert pattern_copies(tmp_path) == ["services/x.py:2 (sb-)"]


@pytest.mark.parametrize(("raw", "region", "e164"), [
    ("+48 601 234 567", None, "+48601234567"),
    ("48601234567", None, "+48601234567"),  # Telegram contacts and wa_ids come without the "+"
    ("601 234 567", "PL", "+48601234567"),  # a national number where the business is
    ("+4822100203", None, "+4822100203"),  # possible though not "valid": the metadata lags
    ("whatsapp:+48601234567", "PL", None),
    ("abc", None, None), ("999123", None, None), ("", "PL", None), (None, None, None),
])
def test_a_senders_number_is_kept_when_it_is_possible(raw: object, region: str | None, e164: str | None) -> None:
    assert to_e164(raw, region) == e164


@pytest.mark.parametrize(("raw", "e164"), [
    ("48601234567", "+48601234567"), ("+48 602 765 432", "+48602765432"),
    ("+4822100203", None),  # possible but not valid: no link, which merges customers, on a maybe
    ("972987654321", None), ("abc", None), (None, None),
])
def test_a_linked_number_must_be_valid(raw: object, e164: str | None) -> None:
    assert to_e164(raw, linking=True) == e164


def test_a_numbers_country_suggests_a_language() -> None:
    assert country_language("+48601234567") == "pl"
    assert country_language("+41446681800") == "de"  # the router's table: Switzerland answers in German
    assert country_language("+33612345678") is None
