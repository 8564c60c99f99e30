"""Chat payloads through the router against the real PostgreSQL.

A customer's edit or deletion of a sent message changes or marks the stored message and is not a
new customer message (no conversation, no acknowledgement); the revisions are real payloads
(tests/fixtures/whatsapp: pywa's edit, Meta's revoke syntax). A WhatsApp customer known only by
their business-scoped user id is a customer like any other, answered through that id."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from services.gateway.channels.meta import parse_payload
from services.router.api_schemas import HistoryMessage
from services.router.handlers import RouterDeps, handle_inbound
from services.router.models import Conversation, Message
from services.router.revisions import OriginalNotStoredYet
from shared.contracts import Envelope, Identity, InboundMessage, derive_id
from shared.db import make_engine, migrate, session_factory
from tests.integration.test_router_store import fake_classify

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "whatsapp"
AT = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


@pytest.fixture
def deps(example_config, pg_url) -> RouterDeps:
    engine = make_engine(pg_url)
    migrate(engine)
    yield RouterDeps(config=example_config, sessions=session_factory(engine), classify=fake_classify,
                     detect_language=lambda text, hints: "en")
    engine.dispose()


def wrap(msg: InboundMessage) -> Envelope:
    return Envelope.wrap(msg, message_id=derive_id(msg.channel, msg.external_id), correlation_id="c", occurred_at=AT)


def original() -> Envelope:
    # The message pywa's edit and the revoke name (wamid.zzzzzz), from the same customer.
    return wrap(InboundMessage(channel="whatsapp", external_id="wamid.zzzzzz", sender=Identity("wa_id", "972987654321"),
                               reply_to="972987654321", received_at=AT, text="Where is my parcel? Order 4821",
                               sender_name="Test Name", meta={"phone_number_id": "1122334455667"}))


def revision(name: str) -> Envelope:
    [msg] = parse_payload(json.loads((FIXTURES / f"{name}.json").read_text()), received_at=AT).messages
    return wrap(msg)


def stored(deps) -> Message:
    with deps.sessions() as s:
        return s.scalar(select(Message).where(Message.external_id == "wamid.zzzzzz"))


def counts(deps) -> tuple[int, int]:
    with deps.sessions() as s:
        return s.scalar(select(func.count()).select_from(Message)), s.scalar(select(func.count()).select_from(Conversation))


def test_an_edit_changes_the_stored_text_and_opens_nothing(deps) -> None:
    [opened] = handle_inbound(original(), deps)
    assert opened.type == "conversation.opened"
    assert handle_inbound(revision("pywa_edit_text"), deps) == []  # no acknowledgement, no notice
    msg = stored(deps)
    assert msg.text == "Text was edited"
    assert msg.details["revisions"] == [{"id": "wamid.yyyyyy", "kind": "edit", "at": AT.isoformat(),
                                         "previous_text": "Where is my parcel? Order 4821"}]
    assert counts(deps) == (1, 1)
    assert handle_inbound(revision("pywa_edit_text"), deps) == []  # WhatsApp redelivers it: nothing more
    assert len(stored(deps).details["revisions"]) == 1
    # What the agent API shows of it: the edited text, when, and the text before.
    shown = HistoryMessage().dump(stored(deps))
    assert shown["text"] == "Text was edited" and shown["edited_at"] == AT.isoformat()
    assert [r["previous_text"] for r in shown["revisions"]] == ["Where is my parcel? Order 4821"]
    assert shown["revoked_at"] is None


def test_a_deletion_marks_the_message_and_keeps_it_for_the_agents(deps) -> None:
    handle_inbound(original(), deps)
    assert handle_inbound(revision("revoke"), deps) == []
    msg = stored(deps)
    assert msg.details["revoked_at"] == AT.isoformat() and msg.text == "Where is my parcel? Order 4821"
    assert counts(deps) == (1, 1)
    assert HistoryMessage().dump(msg)["revoked_at"] == AT.isoformat()


def test_a_revision_before_its_original_is_retried_not_lost_or_made_a_message(deps) -> None:
    # WhatsApp delivers out of order: the bus retries this with backoff until the original is stored.
    with pytest.raises(OriginalNotStoredYet):
        handle_inbound(revision("pywa_edit_text"), deps)
    assert counts(deps) == (0, 0)
    handle_inbound(original(), deps)
    assert handle_inbound(revision("pywa_edit_text"), deps) == []
    assert stored(deps).text == "Text was edited"


def test_only_the_author_revises_a_message(deps) -> None:
    handle_inbound(original(), deps)
    forged = revision("pywa_edit_text")
    forged = dataclasses.replace(forged, payload=dataclasses.replace(
        forged.payload, sender=Identity("wa_id", "37061234567"), reply_to="37061234567"))
    assert handle_inbound(forged, deps) == []
    assert stored(deps).text == "Where is my parcel? Order 4821"


def test_a_username_customer_without_a_phone_number_gets_a_conversation_and_an_acknowledgement(deps) -> None:
    [opened] = handle_inbound(revision("username_user_without_phone"), deps)
    ev = opened.payload
    assert opened.type == "conversation.opened" and ev.acknowledge is True
    assert ev.channel == "whatsapp" and ev.reply_to == "US.13491208655302741918" and ev.customer_name == "Jane"
    assert ev.reply_from == "1122334455667"  # answered from the number written to
    with deps.sessions() as s:
        msg = s.scalar(select(Message))
        # Arrival is the gateway's; WhatsApp's own timestamp is kept for display.
        assert msg.received_at == AT
        assert HistoryMessage().dump(msg)["sent_at"] == datetime.fromtimestamp(1795538000, UTC).isoformat()
