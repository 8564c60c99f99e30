"""Ties between equally loaded agents go to whoever was assigned least recently, read per agent
from the (agent_id, assigned_at) index (migration 0005) rather than a scan of every assignment."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text, update

from services.router.handlers import handle_inbound
from services.router.models import Assignment, Conversation
from tests.integration.test_router_store import deps, envelope, sessions  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration

WARSAW = ZoneInfo("Europe/Warsaw")


def test_tie_goes_to_the_agent_assigned_least_recently(deps, sessions) -> None:  # noqa: F811
    at = datetime(2026, 11, 23, 13, 0, tzinfo=WARSAW)  # Monday: Anna and Taras on shift, both speak ru
    first = {handle_inbound(envelope(30 + i, at, user=f"rr{i}", lang="ru"), deps)[0].payload.owner_id
             for i in range(2)}
    assert first == {"anna", "taras"}
    with sessions() as s, s.begin():
        # Both conversations resolved: equal load (none open), so only "assigned last" decides.
        s.execute(update(Conversation).values(status="resolved", resolved_at=at - timedelta(minutes=1)))
        s.execute(update(Assignment).where(Assignment.agent_id == "anna").values(assigned_at=at - timedelta(hours=1)))
        s.execute(update(Assignment).where(Assignment.agent_id == "taras").values(assigned_at=at - timedelta(days=2)))
    assert handle_inbound(envelope(40, at, user="rr-new-1", lang="ru"), deps)[0].payload.owner_id == "taras"

    with sessions() as s, s.begin():
        s.execute(update(Conversation).values(status="resolved", resolved_at=at - timedelta(minutes=1)))
    # Taras now has the newest assignment (the one just made): the next tie goes back to Anna.
    later = at + timedelta(minutes=5)
    assert handle_inbound(envelope(41, later, user="rr-new-2", lang="ru"), deps)[0].payload.owner_id == "anna"


def test_migration_creates_the_index_the_lookup_relies_on(sessions) -> None:  # noqa: F811
    with sessions() as s:
        names = set(s.execute(text("SELECT indexname FROM pg_indexes WHERE tablename = 'assignments'")).scalars())
    assert "ix_assignments_agent_assigned" in names
