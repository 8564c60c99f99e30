"""Macros (SPEC §6): replies built from seven blocks, per category and language.

A macro is greeting, empathy, the answer, the next question answered in advance, an apology when
due, a compensation, an open door. The starter set lives in ``macro_data/<language>.yaml``: one
file per language, a ``_common`` entry with the blocks most macros share (greeting, open door with
the signature) and one entry per macro id; the same ids exist in every language, so an agent picks
"delivery-late" and the customer reads it in their own language. The config's ``macros`` section
(``catalogue``) changes blocks, adds macros or removes them per language, checked at start
(``check_overrides``) by the same rules.

Every block is a Jinja2 template over four variables: ``customer_name`` and ``order_number`` (either
may be empty: the templates then leave that phrase out), ``owner_name`` (the replying agent) and
``business_name``. Plain text, not HTML: the reply leaves on SMS, Telegram, email; the inbox page
escapes it when it shows it. Rendering is pure.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import yaml

BLOCKS = ("greeting", "empathy", "answer", "next_question", "apology", "compensation", "open_door")
REQUIRED_BLOCKS = ("greeting", "empathy", "answer", "open_door")
# How the blocks read as a message: the apology follows the empathy it belongs to, the compensation
# comes after the answer it makes up for, the open door closes.
PARAGRAPHS = (("greeting",), ("empathy", "apology"), ("answer",), ("next_question",), ("compensation",),
              ("open_door",))
VARIABLES = ("customer_name", "order_number", "owner_name", "business_name")
DATA_DIR = Path(__file__).with_name("macro_data")
_LIMITS = {"customer_name": 80, "order_number": 40, "owner_name": 80, "business_name": 120}


class MacroError(ValueError):
    """An unknown macro, a macro missing in a language, or a variable that is not allowed."""


@dataclass(frozen=True)
class Macro:
    id: str
    language: str
    category: str
    title: str
    blocks: Mapping[str, str]


_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)


@functools.cache
def _compiled(source: str) -> jinja2.Template:
    return _ENV.from_string(source)


@functools.cache
def _starter(language: str) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """The starter file of a language as written: its shared blocks and its entries by id."""
    path = DATA_DIR / f"{language}.yaml"
    if not path.exists():
        return {}, {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    common = data.pop("_common", {}) or {}
    return common, data


def _build(language: str, macro_id: str, entry: Mapping[str, Any], common: Mapping[str, str], where: str) -> Macro:
    """One macro from its entry, the language's shared blocks filling what it leaves out."""
    unknown = set(entry) - {"category", "title", *BLOCKS}
    blocks = {name: entry.get(name, common.get(name)) for name in BLOCKS}
    blocks = {name: text for name, text in blocks.items() if text}
    missing = [name for name in REQUIRED_BLOCKS if name not in blocks]
    if unknown or missing or "category" not in entry:
        raise MacroError(f"{where}: macro {macro_id!r}: unknown keys {sorted(unknown)}, "
                         f"missing blocks {missing}, category {'given' if 'category' in entry else 'missing'}")
    for name, source in blocks.items():
        if not isinstance(source, str):
            raise MacroError(f"{where}: macro {macro_id!r}: block {name!r} is not text")
        try:
            parsed = _ENV.parse(source)
        except jinja2.TemplateSyntaxError as exc:
            raise MacroError(f"{where}: macro {macro_id!r}: block {name!r}: {exc.message}") from exc
        stray = sorted(jinja2.meta.find_undeclared_variables(parsed) - set(VARIABLES))
        if stray:
            raise MacroError(f"{where}: macro {macro_id!r}: block {name!r} uses {', '.join(stray)}; "
                             f"the variables are {', '.join(VARIABLES)}")
    return Macro(id=macro_id, language=language, category=str(entry["category"]),
                 title=str(entry.get("title") or macro_id), blocks=blocks)


@functools.cache
def load_language(language: str) -> dict[str, Macro]:
    """The starter macros of one language by id; a file that breaks the seven-block shape fails loudly."""
    common, entries = _starter(language)
    return {macro_id: _build(language, macro_id, entry, common, f"{language}.yaml")
            for macro_id, entry in entries.items()}


def catalogue(language: str, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Macro]:
    """The macros of one language: the starter set with the config's `macros.<language>` applied.
    An override entry replaces the keys it names in a starter macro (or adds a macro, the language's
    shared greeting and open door filling in); null removes a starter macro."""
    entries = (overrides or {}).get(language)
    if not entries:
        return load_language(language)
    # The config is loaded once; the key makes the merge happen once per distinct override too.
    return _merged(language, json.dumps(entries, sort_keys=True, ensure_ascii=False))


@functools.lru_cache(maxsize=32)
def _merged(language: str, entries_json: str) -> dict[str, Macro]:
    common, starter = _starter(language)
    merged: dict[str, dict[str, Any] | None] = {**starter}
    for macro_id, entry in json.loads(entries_json).items():
        if entry is None:
            merged.pop(macro_id, None)
        elif not isinstance(entry, Mapping):
            raise MacroError(f"{language}.{macro_id}: a macro is a mapping of blocks, or null to remove it")
        else:
            merged[macro_id] = {**(starter.get(macro_id) or {}), **entry}
    return {macro_id: _build(language, macro_id, entry, common, f"{language} (config)")
            for macro_id, entry in merged.items() if entry is not None}


def macros_for(language: str, category: str | None = None,
               overrides: Mapping[str, Mapping[str, Any]] | None = None) -> list[Macro]:
    """The macros an agent can pick for a conversation: its category's first, then the others."""
    every = list(catalogue(language, overrides).values())
    return sorted(every, key=lambda m: (m.category != category, m.id)) if category else every


def find(macro_id: str, language: str, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Macro:
    book = catalogue(language, overrides)
    macro = book.get(macro_id)
    if macro is None:
        known = sorted(book)
        raise MacroError(f"no macro {macro_id!r} in {language!r}" + (f"; known: {', '.join(known)}" if known else ""))
    return macro


def _clean(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    value = " ".join(str(value).split())
    if len(value) > _LIMITS[name]:
        raise MacroError(f"{name} is longer than {_LIMITS[name]} characters")
    return value or None


def render(macro: Macro, *, customer_name: str | None, order_number: str | None, owner_name: str,
           business_name: str) -> str:
    """The macro as the customer reads it: paragraphs of the blocks, empty phrases left out."""
    variables = {name: _clean(name, value) for name, value in (
        ("customer_name", customer_name), ("order_number", order_number),
        ("owner_name", owner_name), ("business_name", business_name))}
    paragraphs = []
    for group in PARAGRAPHS:
        parts = [_compiled(macro.blocks[name]).render(variables).strip() for name in group if name in macro.blocks]
        text = " ".join(p for p in parts if p)
        if text:
            paragraphs.append(text)
    return "\n\n".join(paragraphs)


def check(languages: Sequence[str], overrides: Mapping[str, Mapping[str, Any]] | None = None) -> list[str]:
    """Problems with the macros for these languages: a macro missing in one of them, or one that
    does not render with or without the optional variables. Empty when all is well."""
    problems = []
    books = {}
    for lang in languages:
        try:
            books[lang] = catalogue(lang, overrides)
        except MacroError as exc:
            problems.append(str(exc))
    every = set().union(*books.values()) if books else set()
    for lang, book in books.items():
        for missing in sorted(every - set(book)):
            problems.append(f"{lang}: macro {missing!r} is missing")
        for macro in book.values():
            for sample in ({"customer_name": "Anna", "order_number": "A-1001"},
                           {"customer_name": None, "order_number": None}):
                try:
                    render(macro, owner_name="Piotr", business_name="Northwind", **sample)
                except (jinja2.TemplateError, MacroError) as exc:
                    problems.append(f"{lang}: macro {macro.id!r} does not render: {exc}")
    return problems


def check_overrides(overrides: Mapping[str, Any], languages: Sequence[str], categories: Sequence[str]) -> list[str]:
    """What `switchboard config check` says of the config's `macros` section: a language the
    business does not speak, an entry that breaks the seven-block shape, an unknown category or
    variable, a macro given in one of the business's languages but not in another, one that does not
    render. Empty when all is well."""
    problems = [f"{lang}: not one of the business's languages ({', '.join(languages)})"
                for lang in overrides if lang not in languages]
    for lang, entries in overrides.items():
        for macro_id, entry in (entries or {}).items():
            if isinstance(entry, Mapping) and "category" in entry and entry["category"] not in categories:
                problems.append(f"{lang}.{macro_id}.category: {entry['category']!r} is not a category "
                                f"({', '.join(categories)})")
    return problems + check([lang for lang in languages], overrides)


def check_config_macros(config: Any) -> list[str]:
    """The config loader's check of the `macros` section (shared.config.ConfigCheck): the starter
    set's rules (seven blocks, a known category, the four variables, every business language) and
    rendering, so a typo fails at start, not in an agent's hands."""
    if not config.macros:
        return []
    problems = check_overrides(config.macros, config.business.languages, tuple(config.categories))
    return [f"macros.{problem}" for problem in problems]
