"""Macros (SPEC §6): replies built from seven blocks, per category and language.

A macro is greeting, empathy, the answer, the next question answered in advance, an apology when
due, a compensation, an open door. The starter set lives in ``macro_data/<language>.yaml``: one
file per language, a ``_common`` entry with the blocks most macros share (greeting, open door with
the signature) and one entry per macro id; the same ids exist in every language, so an agent picks
"delivery-late" and the customer reads it in their own language.

Every block is a Jinja2 template over four variables: ``customer_name`` and ``order_number`` (either
may be empty: the templates then leave that phrase out), ``owner_name`` (the replying agent) and
``business_name``. Plain text, not HTML: the reply leaves on SMS, Telegram, email; the inbox page
escapes it when it shows it. Rendering is pure.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import jinja2
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
def load_language(language: str) -> dict[str, Macro]:
    """The macros of one language by id; a file that breaks the seven-block shape fails loudly."""
    path = DATA_DIR / f"{language}.yaml"
    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    common = data.pop("_common", {}) or {}
    macros = {}
    for macro_id, entry in data.items():
        unknown = set(entry) - {"category", "title", *BLOCKS}
        blocks = {name: entry.get(name, common.get(name)) for name in BLOCKS}
        blocks = {name: text for name, text in blocks.items() if text}
        missing = [name for name in REQUIRED_BLOCKS if name not in blocks]
        if unknown or missing or "category" not in entry:
            raise MacroError(f"{path.name}: macro {macro_id!r}: unknown keys {sorted(unknown)}, "
                             f"missing blocks {missing}, category {'given' if 'category' in entry else 'missing'}")
        for source in blocks.values():
            _compiled(source)  # a syntax error surfaces at load, naming nothing but failing early
        macros[macro_id] = Macro(id=macro_id, language=language, category=entry["category"],
                                 title=entry.get("title") or macro_id, blocks=blocks)
    return macros


def macros_for(language: str, category: str | None = None) -> list[Macro]:
    """The macros an agent can pick for a conversation: its category's first, then the others."""
    every = list(load_language(language).values())
    return sorted(every, key=lambda m: (m.category != category, m.id)) if category else every


def find(macro_id: str, language: str) -> Macro:
    macro = load_language(language).get(macro_id)
    if macro is None:
        known = sorted(load_language(language))
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


def check(languages: tuple[str, ...]) -> list[str]:
    """Problems with the starter set for these languages: a macro missing in one of them, or one
    that does not render with or without the optional variables. Empty when all is well."""
    problems = []
    ids = {lang: set(load_language(lang)) for lang in languages}
    every = set().union(*ids.values()) if ids else set()
    for lang in languages:
        for missing in sorted(every - ids[lang]):
            problems.append(f"{lang}: macro {missing!r} is missing")
        for macro in load_language(lang).values():
            for sample in ({"customer_name": "Anna", "order_number": "A-1001"},
                           {"customer_name": None, "order_number": None}):
                try:
                    render(macro, owner_name="Piotr", business_name="Northwind", **sample)
                except (jinja2.TemplateError, MacroError) as exc:
                    problems.append(f"{lang}: macro {macro.id!r} does not render: {exc}")
    return problems
