"""Fixtures shared by every tier. Integration fixtures give each test its own vhost and database."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import infra

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = ROOT / "deploy" / "switchboard.yaml"


@pytest.fixture(scope="session")
def example_config():
    from shared.config import load_config

    return load_config(EXAMPLE_CONFIG)


@pytest.fixture
def rabbit_url():
    name, url = infra.new_vhost()
    yield url
    infra.drop_vhost(name)


@pytest.fixture
def pg_url():
    name, url = infra.new_database()
    yield url
    infra.drop_database(name)


@pytest.fixture
def fake_bot_api():
    from tests.fakes.telegram_api import FakeBotApi

    fake = FakeBotApi().start()
    yield fake
    fake.stop()
