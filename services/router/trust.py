"""What the router believes about who wrote, and where an answer may go. Pure decisions.

- A customer's e-mail identity is only as good as our mail server's verdict (the gateway's
  `meta["sender_auth"]`, services/gateway/channels/mail_auth.py). Mail it did not vouch for is
  kept under an identity of its own kind, `email-unverified`: it never lands in the conversation
  of the customer who owns that address, whose history and order details a forger would otherwise
  get answers about. An agent who is sure merges the two customers (agent API).
- A thread (an [SB-…] reference, In-Reply-To, References) joins a conversation only when it is the
  sender's own customer's. Quoting somebody else's reference is shown to the agent, not obeyed.
- A Reply-To is used only when it is already one of the customer's identities; any other waits
  for an agent to confirm it, and until then answers go to the From address.
- References are random: nobody can compute another customer's.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Collection
from typing import Any

from shared import reference
from shared.contracts import Identity, InboundMessage

#: The identity kind of an e-mail address our mail server did not vouch for (fits String(16)).
UNVERIFIED_EMAIL = "email-unverified"
#: Identity kinds that are e-mail addresses: a Reply-To among them is the customer's own.
EMAIL_KINDS = ("email", UNVERIFIED_EMAIL)


def sender_verified(msg: InboundMessage) -> bool:
    """True for every channel whose adapter authenticates the sender (signatures, bot tokens);
    for e-mail only when our mail server's verdict says so. A message from a gateway that gave no
    verdict (older than this check) is not verified."""
    if msg.channel != "email":
        return True
    auth = msg.meta.get("sender_auth")
    return isinstance(auth, dict) and auth.get("verified") is True


def sender_identity(msg: InboundMessage) -> Identity:
    """The identity the message is filed under: an unverified e-mail gets a kind of its own."""
    if msg.channel == "email" and not sender_verified(msg):
        return Identity(UNVERIFIED_EMAIL, msg.sender.value)
    return msg.sender


def reply_address(sender: str, reply_to: str | None, customer_addresses: Collection[str]) -> tuple[str, str | None]:
    """(where answers go now, a Reply-To waiting for an agent's confirmation or None).

    A Reply-To other than the sender is honoured only when it is already one of the customer's
    addresses: a forged From with the thief's Reply-To must not send the victim's answer to the thief."""
    sender = sender.strip().lower()
    wanted = (reply_to or "").strip().lower()
    if not wanted or wanted == sender:
        return sender, None
    if wanted in {a.strip().lower() for a in customer_addresses}:
        return wanted, None
    return sender, wanted


def new_reference(random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """"SB-" + 10 base32 characters (50 random bits): short enough to quote, impossible to guess
    in the number of mails anyone could send. The format is shared.reference's, which the gateway
    looks for in a subject."""
    return reference.PREFIX + base64.b32encode(random_bytes(10)).decode()[:reference.LENGTH]


def quoted_reference(own: str | None, foreign: str | None, subject_reference: Any) -> str | None:
    """The reference the agent should see this message quoted although it is not this customer's:
    the conversation of somebody else it pointed at, else an [SB-…] in the subject that matched
    nothing (a guess or a typo). None when the thread was the customer's own or there was none."""
    if foreign:
        return foreign
    if own is None and isinstance(subject_reference, str) and subject_reference:
        return subject_reference.upper()
    return None
