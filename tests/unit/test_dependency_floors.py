"""pyproject.toml's lower bounds leave out every version with a published advisory we know of, so no
install (an image, a developer's pip) can pick one. `make audit` (CI) checks the pinned lock against
the advisory database; this checks the ranges, which pip-audit does not."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]

# (package, the last affected version, the advisories): from the projects' changelogs and the
# CVE records (NVD).
ADVISORIES = [
    ("waitress", "3.0.0", "CVE-2024-49768 (request smuggling), CVE-2024-49769 (busy loop on a half-open socket)"),
    ("waitress", "3.0.1", "3.0.2's security fix: untrusted values of trusted proxy headers reached the app"),
    ("requests", "2.31.0", "CVE-2024-35195 (verify=False stuck on a session's connection pool)"),
    ("requests", "2.32.3", "CVE-2024-47081 (.netrc credentials leaked to other hosts)"),
    ("jinja2", "3.1.4", "CVE-2024-56201, CVE-2024-56326 (sandbox breakouts)"),
    ("jinja2", "3.1.5", "CVE-2025-27516 (sandbox breakout through |attr)"),
    ("flask", "3.1.0", "CVE-2025-47278 (SECRET_KEY_FALLBACKS signed with the wrong key)"),
]


def dependencies() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    return {r.name.lower(): r for r in reqs}


@pytest.mark.parametrize(("package", "affected", "why"), ADVISORIES, ids=[f"{p}-{v}" for p, v, _ in ADVISORIES])
def test_no_version_with_an_advisory_is_allowed(package: str, affected: str, why: str) -> None:
    requirement = dependencies()[package]
    assert not requirement.specifier.contains(affected, prereleases=True), f"{requirement} allows {affected}: {why}"
