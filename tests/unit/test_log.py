"""Logs: one JSON object per line, the correlation id on every line, contact data masked."""

from __future__ import annotations

import io
import json
import logging

from shared.log import correlated, mask, setup_logging


def test_phone_numbers_and_addresses_are_masked() -> None:
    line = mask("from +48 601 234 567 and anna.kowalska@example.com, order 48213")
    assert "601 234" not in line and "anna.kowalska" not in line
    assert "+48*******67" in line and "a***@example.com" in line
    assert "48213" in line  # an order number is not a phone number


def test_a_client_ip_address_is_not_mistaken_for_a_phone_number() -> None:
    # The inbox's failed-login lines name the client's address: an operator blocks it whole.
    line = mask("inbox login failed from 203.0.113.66, call +48 601 234 567")
    assert "203.0.113.66" in line and "601 234" not in line
    assert "48.601.234.567" not in mask("tel 48.601.234.567")  # not an address: still masked


def test_lines_are_json_with_the_correlation_id() -> None:
    out = io.StringIO()
    setup_logging("router", "INFO", stream=out)
    log = logging.getLogger("test.log")
    with correlated("corr-123"):
        log.info("routed message from %s", "+380501234567", extra={"conversation_id": "c1"})
    log.warning("outside")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["correlation_id"] == "corr-123" and first["service"] == "router"
    assert first["conversation_id"] == "c1" and first["level"] == "info"
    assert "+380501234567" not in first["msg"]
    assert "correlation_id" not in second


def test_contact_data_is_masked_in_extra_fields_and_tracebacks_too() -> None:
    out = io.StringIO()
    setup_logging("notifier", "INFO", stream=out)
    log = logging.getLogger("test.log.extra")
    try:
        raise ValueError("provider refused +48 601 234 567")
    except ValueError:
        log.exception("send failed", extra={"address": "jan.nowak@example.org", "to": "+380501234567", "attempt": 2})
    [entry] = (json.loads(line) for line in out.getvalue().splitlines())
    assert entry["address"] == "j***@example.org" and "501234" not in entry["to"]
    assert "601 234" not in entry["exc"] and "ValueError" in entry["exc"]
    assert entry["attempt"] == 2  # numbers that are not contact data stay as they are


def test_message_ids_stay_whole_while_a_phone_number_beside_them_is_masked() -> None:
    # Ids are how an operator follows a message through the logs; their digit groups are not a phone.
    ids = ["9ebabc3c-8912-4513-a7c3-0d5b4b8ea7c3", "12345678-1234-5678-1234-567812345678"]
    for mid in ids:
        line = mask(f"routed {mid} from +48 601 234 567")
        assert mid in line and "601 234" not in line
    out = io.StringIO()
    setup_logging("router", "INFO", stream=out)
    logging.getLogger("test.log.ids").info("routed %s", ids[1], extra={"message_id": ids[1], "to": "+380501234567"})
    entry = json.loads(out.getvalue())
    assert entry["message_id"] == ids[1] and ids[1] in entry["msg"] and "501234" not in entry["to"]
