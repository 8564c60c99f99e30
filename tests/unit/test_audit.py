"""`make audit` reads pip-audit's report: a known vulnerability always fails, an un-looked-up package is
never reported as clean."""

from __future__ import annotations

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location("audit", Path(__file__).parents[2] / "deploy" / "audit.py")
assert spec and spec.loader
audit = importlib.util.module_from_spec(spec)
spec.loader.exec_module(audit)

CLEAN = {"name": "flask", "version": "3.1.2", "vulns": []}
VULNERABLE = {"name": "waitress", "version": "3.0.0",
              "vulns": [{"id": "GHSA-9298-4cf8-g4wj", "fix_versions": ["3.0.1"]}]}
NOT_FOUND = {"name": "aiohappyeyeballs", "skip_reason": "Dependency not found on PyPI and could not be audited"}


def test_a_known_vulnerability_fails_even_where_the_service_is_out_of_reach() -> None:
    code, lines = audit.verdict([CLEAN, VULNERABLE, NOT_FOUND], unreachable_ok=True)
    assert code == 1
    assert "VULNERABLE waitress 3.0.0: GHSA-9298-4cf8-g4wj" in lines


def test_packages_not_looked_up_fail_unless_the_service_is_declared_out_of_reach() -> None:
    assert audit.verdict([CLEAN, NOT_FOUND], unreachable_ok=False)[0] == 1
    code, lines = audit.verdict([CLEAN, NOT_FOUND], unreachable_ok=True)
    assert code == 0
    assert any("NOT AUDITED: 1 packages" in line for line in lines)
    assert "make audit: 1 of 2 pinned packages audited, 0 with known vulnerabilities" in lines


def test_a_fully_audited_clean_lock_passes() -> None:
    assert audit.verdict([CLEAN], unreachable_ok=False) == (0, ["make audit: 1 of 1 pinned packages audited, 0 with known vulnerabilities"])
