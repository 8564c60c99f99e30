"""Choosing a conversation's one owner: pure rules over the agents, their load and the time.

The rules, in order (SPEC §4):
1. the customer's previous owner, if still active, skilled for the category and under capacity;
2. else the least-loaded skilled agent on shift who speaks the language (load = open
   conversations / capacity); ties go to whoever was assigned least recently (round-robin);
3. out of hours (nobody eligible on shift): the eligible agent whose next shift starts soonest;
4. nobody eligible at all: the team queue.
Every decision carries its reason, which the router stores.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from shared.config import Agent


@dataclass(frozen=True)
class Decision:
    agent_id: str | None
    team_id: str | None
    rule: str  # previous_owner | least_loaded | next_shift | team_queue
    reason: str


def _skilled(agent: Agent, category: str) -> bool:
    return category in agent.skills


def choose_owner(
    *,
    agents: Iterable[Agent],
    category: str,
    language: str,
    at: datetime,
    loads: Mapping[str, int],
    last_assigned: Mapping[str, datetime],
    previous_owner: str | None = None,
    default_team: str | None = None,
) -> Decision:
    pool = [a for a in agents if a.status == "active"]
    by_id = {a.id: a for a in pool}

    def load(a: Agent) -> float:
        return loads.get(a.id, 0) / a.capacity

    def under_capacity(a: Agent) -> bool:
        return loads.get(a.id, 0) < a.capacity

    prev = by_id.get(previous_owner) if previous_owner else None
    if prev and _skilled(prev, category) and under_capacity(prev):
        return Decision(prev.id, prev.team, "previous_owner",
                        f"previous owner {prev.id} is active, skilled for {category} and under capacity "
                        f"({loads.get(prev.id, 0)}/{prev.capacity})")

    skilled = [a for a in pool if _skilled(a, category) and under_capacity(a)]
    speakers = [a for a in skilled if language in a.languages]
    language_note = ""
    if not speakers and not any(language in a.languages for a in pool):
        # Nobody in the whole roster speaks it: waiting forever helps no one, so any skilled agent.
        speakers = skilled
        language_note = f"; nobody speaks {language}, so any skilled agent"

    on_shift = [a for a in speakers if a.shift.is_open(at)]
    if on_shift:
        never = datetime.min.replace(tzinfo=at.tzinfo)
        best = min(on_shift, key=lambda a: (load(a), last_assigned.get(a.id, never), a.id))
        return Decision(best.id, best.team, "least_loaded",
                        f"{best.id} is on shift, skilled for {category}, speaks {language}, least loaded "
                        f"({loads.get(best.id, 0)}/{best.capacity}) of {len(on_shift)} on shift{language_note}")

    openings = [(a.shift.next_opening(at), a) for a in speakers]
    upcoming = [(t, a) for t, a in openings if t is not None]
    if upcoming:
        starts, best = min(upcoming, key=lambda ta: (ta[0], load(ta[1]), ta[1].id))
        return Decision(best.id, best.team, "next_shift",
                        f"nobody eligible on shift; {best.id}'s shift starts first, at {starts.isoformat()}"
                        f"{language_note}")

    team = default_team or next(iter(a.team for a in pool), None)
    return Decision(None, team, "team_queue",
                    f"no active agent skilled for {category} speaking {language} with free capacity: team queue")


# --- availability, handover and the team queue (agent API) -----------------------------------

#: An agent's own availability word → the roster status the rules above read.
AVAILABILITY_STATUS = {"on_shift": "active", "off": "off", "on_leave": "leave"}
#: The config's status → the availability an agent has until they say otherwise.
DEFAULT_AVAILABILITY = {v: k for k, v in AVAILABILITY_STATUS.items()}


def with_availability(agents: Iterable[Agent], availability: Mapping[str, str]) -> list[Agent]:
    """The roster as it is now: an agent's stored availability overrides the config's status."""
    out = []
    for a in agents:
        word = availability.get(a.id)
        out.append(replace(a, status=AVAILABILITY_STATUS[word]) if word in AVAILABILITY_STATUS else a)
    return out


@dataclass(frozen=True)
class OpenWork:
    """An open conversation as the rules see it."""

    conversation_id: str
    category: str
    language: str
    since: datetime  # queued or opened at: the oldest is served first


def hand_over(
    *,
    leaving: str,
    work: Iterable[OpenWork],
    agents: Iterable[Agent],
    at: datetime,
    loads: Mapping[str, int],
    last_assigned: Mapping[str, datetime],
    default_team: str | None = None,
) -> list[tuple[str, Decision]]:
    """New owners for the open conversations of an agent going off duty, by the same rules.

    Decided one after another, oldest first, counting each hand-over in the receiver's load, so
    ten conversations do not all land on the one agent who was least loaded at the start.
    """
    pool = [a for a in agents if a.id != leaving]
    loads_now = dict(loads)
    last_now = dict(last_assigned)
    decisions = []
    for item in sorted(work, key=lambda w: (w.since, w.conversation_id)):
        d = choose_owner(agents=pool, category=item.category, language=item.language, at=at, loads=loads_now,
                         last_assigned=last_now, default_team=default_team)
        d = Decision(d.agent_id, d.team_id, d.rule, f"handover from {leaving}: {d.reason}")
        if d.agent_id:
            loads_now[d.agent_id] = loads_now.get(d.agent_id, 0) + 1
            last_now[d.agent_id] = at
        decisions.append((item.conversation_id, d))
    return decisions


def drain_for(agent: Agent, *, queued: Iterable[OpenWork], load: int, at: datetime,
              roster_languages: Iterable[str] = ()) -> list[tuple[str, Decision]]:
    """The queued conversations of the agent's team that the agent takes now that capacity freed.

    Oldest first, while the agent is active, on shift and under capacity, skipping what they are
    not skilled for or cannot read (unless nobody in the roster speaks that language).
    """
    if agent.status != "active" or not agent.shift.is_open(at):
        return []
    spoken = set(roster_languages)
    taken: list[tuple[str, Decision]] = []
    for item in sorted(queued, key=lambda w: (w.since, w.conversation_id)):
        if load + len(taken) >= agent.capacity:
            break
        if not _skilled(agent, item.category):
            continue
        if item.language not in agent.languages and item.language in spoken:
            continue
        taken.append((item.conversation_id, Decision(
            agent.id, agent.team, "queue_drain",
            f"oldest queued conversation of team {agent.team} (queued since {item.since.isoformat()}); "
            f"{agent.id} has free capacity ({load + len(taken)}/{agent.capacity})")))
    return taken
