"""How agents see a customer who gave no name: by what identifies them, masked when the agent's
config says so (`agents[].mask_contacts`), never as "Unknown customer" when there is anything better.

Most SMS, WhatsApp without a profile name and many mails carry no name. The identity is what an
agent recognises the customer by anyway (the number on the phone, the address in a mail client).
"""

from __future__ import annotations

from collections.abc import Iterable

from shared.log import mask

#: The identity an agent best recognises a customer by, first first.
PREFERENCE = ("phone", "wa_id", "email", "email-unverified", "telegram", "psid", "igsid", "call_sid")


def _shown(kind: str, value: str, masked: bool) -> str:
    if kind == "call_sid":
        return "withheld number"
    if kind in ("phone", "wa_id", "email", "email-unverified"):
        text = value if kind != "wa_id" or value.startswith("+") else f"+{value}"
        shown = mask(text) if masked else text
        # Our mail server did not vouch for the From (services/router/trust.py): say so.
        return f"{shown} (unverified)" if kind == "email-unverified" else shown
    # Chat ids say nothing to a person; the channel does. Masked, only their end is kept.
    label = {"telegram": "Telegram user", "psid": "Messenger user", "igsid": "Instagram user"}.get(kind, kind)
    return f"{label} …{value[-4:]}" if masked else f"{label} {value}"


def customer_label(name: str | None, identities: Iterable[tuple[str, str]], *, masked: bool = False) -> str:
    """The customer's name, else their best identity (masked if asked), else "Unknown customer"."""
    if name and name.strip():
        return name
    by_kind: dict[str, str] = {}
    for kind, value in identities:
        by_kind.setdefault(kind, value)
    for kind in PREFERENCE:
        if kind in by_kind:
            return _shown(kind, by_kind[kind], masked)
    for kind, value in by_kind.items():
        return _shown(kind, value, masked)
    return "Unknown customer"
