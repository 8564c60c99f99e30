"""Delivery statuses of outbound messages, as providers report them, and their order.

Providers' callbacks arrive late, out of order and more than once; a recorded status only ever
moves forward (`status_moves_forward`).
"""

from __future__ import annotations

#: Outbound message statuses in the order providers (Twilio, Meta) report them. Everything at rank 5 is final:
#: the first final status wins, so a late or repeated callback never moves a message back.
STATUS_RANK = {
    "scheduled": 0,
    "accepted": 1,  # accepted by a Messaging Service, not yet queued for a sender number
    "queued": 2,
    "sending": 3,
    "sent": 4,
    "delivered": 5,
    "undelivered": 5,
    "failed": 5,
    "partially_delivered": 5,
    "canceled": 5,
    "read": 6,  # WhatsApp/RCS read receipts come after delivered
}


def status_moves_forward(old: str | None, new: str) -> bool:
    """Whether a callback saying `new` should replace the recorded `old` status.

    Callbacks arrive out of order and are retried: a late "sent" after "delivered", or a second
    final status, must not move a message back. An unknown word never replaces a known one, and
    a known one always replaces an unknown one.
    """
    new_rank = STATUS_RANK.get(new)
    if old is None:
        return True
    old_rank = STATUS_RANK.get(old)
    if new_rank is None:
        return False
    if old_rank is None:
        return True
    return new_rank > old_rank
