"""Errors shared by every service."""

from __future__ import annotations


class ConfigError(Exception):
    """The configuration cannot be used; `problems` are lines `key.path: what is wrong`."""

    exit_code = 2

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))

    def render(self) -> str:
        lines = [f"switchboard: the {self.source} is not valid:"]
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)
