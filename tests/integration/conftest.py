"""Fixtures the integration tests share."""

from __future__ import annotations

import pytest

from shared.db import make_engine, migrate, session_factory


@pytest.fixture
def sessions(pg_url):
    """Sessions on a fresh, migrated PostgreSQL database of the test's own."""
    engine = make_engine(pg_url)
    migrate(engine)
    yield session_factory(engine)
    engine.dispose()
