"""The pure rules behind availability, hand-over and the team queue (services/router/assignment.py).

The roster is the example config's (deploy/switchboard.yaml): anna (lead; pl en ru; capacity 8;
Mon–Fri 9–17), taras (uk ru en pl; 12; Mon–Fri 12–20), jonas (lt en de; no payment skill; 10;
Mon–Thu 9–17, Sat 10–14), maria (bg en de ru; 10; Wed–Fri 9–17, Sat 10–14). Times are Warsaw.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.router.assignment import OpenWork, drain_for, hand_over, with_availability

WARSAW = ZoneInfo("Europe/Warsaw")
WED_10 = datetime(2026, 11, 25, 10, 0, tzinfo=WARSAW)
WED_20 = datetime(2026, 11, 25, 20, 30, tzinfo=WARSAW)


def work(n: int, category: str = "delivery", language: str = "en", minutes: int = 0) -> OpenWork:
    return OpenWork(f"c{n}", category, language, WED_10 - timedelta(hours=1) + timedelta(minutes=minutes))


@pytest.mark.parametrize(("stored", "expected"), [
    ({}, {"anna": "active", "taras": "active", "jonas": "active", "maria": "active"}),
    ({"jonas": "off"}, {"anna": "active", "taras": "active", "jonas": "off", "maria": "active"}),
    ({"maria": "on_leave", "anna": "on_shift"}, {"anna": "active", "taras": "active", "jonas": "active",
                                                 "maria": "leave"}),
    ({"ghost": "off", "anna": "nonsense"}, {"anna": "active", "taras": "active", "jonas": "active",
                                            "maria": "active"}),
])
def test_stored_availability_overrides_the_config_status(example_config, stored, expected) -> None:
    roster = with_availability(example_config.agents.values(), stored)
    assert {a.id: a.status for a in roster} == expected


@pytest.mark.parametrize(("leaving", "items", "at", "expected"), [
    # German: maria is the other speaker on shift.
    ("jonas", [work(1, language="de")], WED_10, {"c1": ("maria", "least_loaded")}),
    # Nobody else reads Lithuanian: any skilled agent; the first hand-over counts in the load.
    ("jonas", [work(1, language="lt"), work(2, language="lt", minutes=1)], WED_10,
     {"c1": ("anna", "least_loaded"), "c2": ("maria", "least_loaded")}),
    # Bulgarian in the evening, maria leaving: nobody else speaks it, taras is still on shift.
    ("maria", [work(1, language="bg")], WED_20 - timedelta(hours=1), {"c1": ("taras", "least_loaded")}),
    # Ukrainian after everyone's shift: whoever starts first (anna and jonas at 09:00, taras at 12:00).
    ("taras", [work(1, language="uk")], WED_20, {"c1": ("anna", "next_shift")}),
])
def test_hand_over_follows_the_assignment_rules(example_config, leaving, items, at, expected) -> None:
    decisions = hand_over(leaving=leaving, work=items, agents=example_config.agents.values(), at=at, loads={},
                          last_assigned={}, default_team="support")
    assert {c: (d.agent_id, d.rule) for c, d in decisions} == expected
    assert all(d.reason.startswith(f"handover from {leaving}: ") for _, d in decisions)


def test_hand_over_with_nobody_left_goes_to_the_team_queue(example_config) -> None:
    from dataclasses import replace

    alone = [replace(a, status="off") if a.id != "jonas" else a for a in example_config.agents.values()]
    [(conv, decision)] = hand_over(leaving="jonas", work=[work(1)], agents=alone, at=WED_10, loads={},
                                   last_assigned={}, default_team="support")
    assert (conv, decision.agent_id, decision.team_id, decision.rule) == ("c1", None, "support", "team_queue")


@pytest.mark.parametrize(("agent", "queued", "load", "at", "expected"), [
    # Oldest first, whatever order the rows came in.
    ("maria", [work(2, minutes=5), work(1, minutes=0)], 0, WED_10, ["c1", "c2"]),
    # Only as many as free capacity (maria: 10).
    ("maria", [work(1), work(2, minutes=1), work(3, minutes=2)], 9, WED_10, ["c1"]),
    ("maria", [work(1)], 10, WED_10, []),
    # Off shift: nothing, the queue waits for someone on shift.
    ("maria", [work(1)], 0, WED_20, []),
    # Not skilled (jonas has no payment skill): skipped, the next one is taken.
    ("jonas", [work(1, category="payment"), work(2, minutes=1)], 0, WED_10, ["c2"]),
    # A language the agent does not read but a colleague does: left for the colleague.
    ("jonas", [work(1, language="bg"), work(2, language="de", minutes=1)], 0, WED_10, ["c2"]),
    # A language nobody on the roster reads: anyone skilled takes it.
    ("jonas", [work(1, language="fr")], 0, WED_10, ["c1"]),
])
def test_drain_for_gives_the_freed_agent_the_oldest_they_can_take(example_config, agent, queued, load, at,
                                                                  expected) -> None:
    spoken = {lang for a in example_config.agents.values() for lang in a.languages}
    taken = drain_for(example_config.agents[agent], queued=queued, load=load, at=at, roster_languages=spoken)
    assert [c for c, _ in taken] == expected
    assert all(d.agent_id == agent and d.rule == "queue_drain" for _, d in taken)


def test_an_agent_off_duty_drains_nothing(example_config) -> None:
    [maria] = with_availability([example_config.agents["maria"]], {"maria": "on_leave"})
    assert drain_for(maria, queued=[work(1)], load=0, at=WED_10) == []
