"""The bench's config (tests/bench/stack.py): the example shop with its team on shift around the
clock, so a bench run measures the same work (an acknowledgement and a notice per message) at
whatever hour, on whatever day, it runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from shared.config import load_config
from tests.bench.stack import on_shift_around_the_clock
from tests.support.procs import edited_config


def test_every_agent_is_on_shift_at_every_hour_including_holidays_and_closures(tmp_path: Path) -> None:
    config = load_config(edited_config(tmp_path, on_shift_around_the_clock))
    # Christmas Eve (a closure from 14:00 in the example), Christmas (a Polish holiday), nights,
    # a Sunday; every 37 minutes over nine days.
    start = datetime(2026, 12, 23, 0, 0, tzinfo=UTC)
    for k in range(9 * 24 * 60 // 37):
        at = start + timedelta(minutes=37 * k)
        assert all(cal.is_open(at) for cal in config.calendars.values()), at
        assert all(agent.shift.is_open(at) for agent in config.agents.values()), at


def test_every_notice_is_a_telegram_send_to_a_chat_of_the_agents_own(tmp_path: Path) -> None:
    config = load_config(edited_config(tmp_path, on_shift_around_the_clock))
    notify = [agent.notify for agent in config.agents.values()]
    assert all(n is not None and n.channel == "telegram" for n in notify)
    addresses = [n.address for n in notify if n is not None]
    assert len(set(addresses)) == len(addresses) == len(config.agents)
