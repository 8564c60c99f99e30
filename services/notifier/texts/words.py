"""Each language's words for the texts, and how a customer is named in them.

The date words are shared with the gateway's voice prompts (shared/locale); the rest, a
``language.yaml`` beside each language's templates, is the notifier's: category lines, channel
names, forms of address.

Grammar choices that hold for any input:

* Business and channel names are never declined: they only appear in the nominative (signature,
  prefix, parenthesis), because "Ромашка" after "в" would need to become "Ромашку".
* Customers are addressed by name where the nominative is the address form (en, de, ru, bg). In
  pl, uk and lt the address form is the vocative, which cannot be derived safely from an arbitrary
  name; these languages carry a table of common first names with their vocatives ("Pani Anno",
  "Тарасе", "Jonai"), and for any other name the greeting stays neutral and the name appears in
  the nominative next to the conversation reference instead.
"""

from __future__ import annotations

import functools
from typing import Any

import yaml

from services.notifier.texts.templating import TEMPLATE_DIR
from shared.locale import date_words

NAME_LIMIT = 80


@functools.cache
def words(language: str) -> dict[str, Any]:
    """Everything a language's texts need beyond the templates: date words and language.yaml."""
    data = {**date_words(language),
            **yaml.safe_load((TEMPLATE_DIR / language / "language.yaml").read_text(encoding="utf-8"))}
    # Lookups are by case-folded first name, so "ANNA" and "anna" find "Anna".
    data["vocatives"] = {k.casefold(): v for k, v in (data.get("vocatives") or {}).items()}
    data.setdefault("at_word_by_hour", {})
    return data


def clean_name(name: str | None, limit: int = NAME_LIMIT) -> str | None:
    """A name fit to print: one line, single spaces, at most ``limit`` characters."""
    # Profile names arrive with newlines, double spaces and sometimes novels in them.
    if not name:
        return None
    cleaned = " ".join(name.split())
    if len(cleaned) > limit:
        cleaned = cleaned[: limit - 1].rstrip() + "…"
    return cleaned or None


def address(name: str | None, language: str) -> str | None:
    """How the greeting names the customer, or None for a neutral greeting (see module docstring)."""
    if not name:
        return None
    language_words = words(language)
    if not language_words.get("vocative_required"):
        return name
    first = name.split()[0]
    known = language_words["vocatives"].get(first.casefold())
    if known:
        return known
    # Only endings whose vocative is certain whatever the name (see the language's YAML); a
    # rule may say "don't guess" (None), and no matching rule means a neutral greeting.
    styled = first.capitalize() if first.isupper() or first.islower() else first
    for suffix, replacement in language_words.get("vocative_rules") or ():
        if styled.endswith(suffix) and len(styled) > len(suffix):
            return None if replacement is None else styled[: -len(suffix)] + replacement
    return None


def spell_channel(channel: str, language: str) -> str:
    """A channel id's usual spelling in the language ("e-mail", "SMS"); other names as given."""
    return words(language)["channels"].get(channel, channel)
