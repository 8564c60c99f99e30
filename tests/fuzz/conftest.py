"""The fuzz tier: property-based tests on every parser and signature check, schemathesis on the
gateway's and the agent API's OpenAPI documents."""

from __future__ import annotations

from tests.fuzz.settings import describe


def pytest_report_header(config) -> str:
    return describe()
