"""Accepting a normalised message: publish with confirms, or spool when the broker is down."""

from __future__ import annotations

import logging
import threading

from services.gateway.spool import Forwarder, Spool
from shared.bus.publisher import BusUnavailable, Publisher
from shared.bus.topology import EVENTS
from shared.contracts import Envelope, encode

log = logging.getLogger(__name__)


class Intake:
    def __init__(self, publisher: Publisher, spool: Spool):
        self.publisher = publisher
        self.spool = spool
        self.forwarder = Forwarder(spool, publisher)
        self._order = threading.Lock()

    def accept(self, envelope: Envelope) -> str:
        """Returns "published" or "spooled"; raises only if neither the broker nor the disk took it."""
        body = encode(envelope)
        if not self.spool.pending:
            try:
                self.publisher.publish_raw(body, exchange=EVENTS, routing_key=envelope.type,
                                           message_id=envelope.message_id, correlation_id=envelope.correlation_id)
                return "published"
            except BusUnavailable as exc:
                log.warning("broker unavailable, spooling: %s", exc)
        self.spool.put(envelope.type, envelope.message_id, envelope.correlation_id, body)
        self.forwarder.wake.set()
        return "spooled"
