"""Fixtures the contract tests of the gateway's HTTP edge share."""

from __future__ import annotations

import pytest

from tests.support.gateway import RecordingIntake


@pytest.fixture
def intake() -> RecordingIntake:
    return RecordingIntake()
