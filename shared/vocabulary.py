"""The product's fixed vocabularies, each written once: the languages it speaks, the categories it
ships with, the weekday keys of every hours table, and which language a phone number's country
suggests.

Every other module imports these names (some re-export them under an older name, which is the same
object, not a copy); tests/unit/test_one_home.py fails when a literal copy of one of these lists
appears anywhere else in services/ or shared/.
"""

from __future__ import annotations

from types import MappingProxyType

#: The languages the product speaks (templates, lexicons, macros, voice prompts), ISO 639-1.
LANGUAGES: tuple[str, ...] = ("en", "ru", "bg", "pl", "lt", "uk", "de")

#: The ones written in Cyrillic: a Latin-letter message may be one of them transliterated.
CYRILLIC_LANGUAGES: tuple[str, ...] = ("ru", "uk", "bg")

#: The categories a business has when its config names none; "other" is the fallback every
#: configuration must keep.
CATEGORIES: tuple[str, ...] = ("product", "delivery", "returns", "payment", "technical", "other")
FALLBACK_CATEGORY = "other"

#: Weekday keys in Python's weekday() order (Monday is 0), as the YAML hours tables spell them.
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

#: Country (ISO 3166-1 alpha-2, phonenumbers' region code) → the language a support team would
#: answer in, for a sender of whom only the phone number is known. Only a hint: the text decides.
#: Only languages in LANGUAGES are listed.
COUNTRY_LANGUAGE: MappingProxyType[str, str] = MappingProxyType({
    "GB": "en", "IE": "en", "US": "en", "CA": "en", "AU": "en", "NZ": "en", "MT": "en",
    "RU": "ru", "BY": "ru", "KZ": "ru", "KG": "ru",
    "UA": "uk", "BG": "bg", "PL": "pl", "LT": "lt",
    "DE": "de", "AT": "de", "CH": "de", "LI": "de", "LU": "de",
})

__all__ = ["LANGUAGES", "CYRILLIC_LANGUAGES", "CATEGORIES", "FALLBACK_CATEGORY", "WEEKDAYS", "COUNTRY_LANGUAGE"]
