"""Phone numbers, read once: the one E.164 normaliser (every channel that gives us a number and the
config's agent and team numbers go through it) and the language a number's country suggests.

Two validity rules, chosen by what the number is used for, not by the channel it came from:
- a number that *is* the sender (Twilio's From, a caller, the config's agent and team numbers) is
  kept when phonenumbers finds it *possible* (a plausible length for its country): the provider
  connected it, and the range metadata lags new allocations, so dropping it would lose a customer;
- a number that only *links* a second identity to the sender (a Telegram contact, the phone behind
  a WhatsApp wa_id) must be *valid* by the metadata (`linking=True`): a wrong link merges two
  customers, a missing one costs nothing.
What is not a number at all (letters, a channel address, too few digits) is None under both.
"""

from __future__ import annotations

import phonenumbers

from shared.vocabulary import COUNTRY_LANGUAGE

#: Twilio writes other channels' senders as "<channel>:<address>"; those are not phone numbers.
_CHANNEL_ADDRESS_PREFIXES = ("whatsapp:", "messenger:", "rcs:")


def to_e164(raw: object, default_region: str | None = None, *, linking: bool = False) -> str | None:
    """`raw` as an E.164 number ("+48601234567"), or None when it is not a phone number.

    With `default_region` ("PL") a national-format number is read in that country. Without one the
    number is international: a missing "+" is added, as Telegram contacts and WhatsApp wa_ids come
    without it. `linking`: the number only links an identity, so it must be valid (module docstring).
    """
    if not isinstance(raw, str):
        return None
    text = raw.strip()
    if not text or text.startswith(_CHANNEL_ADDRESS_PREFIXES):
        return None
    if default_region is None and not text.startswith("+"):
        text = "+" + text
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException:
        return None
    usable = phonenumbers.is_valid_number if linking else phonenumbers.is_possible_number
    if not usable(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def region_of(e164: str) -> str | None:
    """The country (ISO 3166-1 alpha-2) of an E.164 number, or None when it has none we know."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return None
    return phonenumbers.region_code_for_number(number)


def country_language(e164: str) -> str | None:
    """The language a number's country suggests (shared.vocabulary.COUNTRY_LANGUAGE), if any."""
    return COUNTRY_LANGUAGE.get(region_of(e164) or "")


__all__ = ["to_e164", "region_of", "country_language"]
