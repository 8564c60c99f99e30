"""The KPI report's edge: who may see what, the period, and the queries that feed services/router/kpis.py.

Used by the API (GET /api/v1/kpis), the dashboard page and `switchboard report`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import MetaData, Table, func, inspect, select
from sqlalchemy.orm import Session

from services.router import kpis
from services.router.models import Conversation, Message
from shared.config import Agent, Config


class ScopeError(Exception):
    """The asked scope is not the asker's to see (403) or does not exist (422)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Scope:
    team: str | None
    agent: str | None


def led_teams(agent: Agent, config: Config) -> set[str]:
    teams = {t.id for t in config.teams.values() if t.lead == agent.id}
    if agent.role == "lead":
        teams.add(agent.team)
    return teams


def scope_for(asker: Agent | None, config: Config, team: str | None, agent: str | None) -> Scope:
    """A lead sees their teams and their agents; any other agent only their own figures.

    ``asker`` None is the operator's CLI: everything.
    """
    if team is not None and team not in config.teams:
        raise ScopeError(422, f"unknown team {team!r}")
    if agent is not None and agent not in config.agents:
        raise ScopeError(422, f"unknown agent {agent!r}")
    if asker is None:
        return Scope(team, agent)
    teams = led_teams(asker, config)
    if not teams:
        if team is not None or (agent is not None and agent != asker.id):
            raise ScopeError(403, "only a team lead sees a team's or another agent's figures")
        return Scope(None, asker.id)
    if team is not None and team not in teams:
        raise ScopeError(403, f"you do not lead the team {team!r}")
    if agent is not None and agent != asker.id and config.agents[agent].team not in teams:
        raise ScopeError(403, f"{agent!r} is not in a team you lead")
    if team is None and agent is None:
        team = sorted(teams)[0]  # a lead's default view is their (first) team
    return Scope(team, agent)


def parse_moment(text: str, tz: ZoneInfo) -> datetime:
    """"2026-11-01" (midnight in the business's zone) or an ISO-8601 time (no offset: that zone)."""
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(0), tzinfo=tz)
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a date (2026-11-01) or an ISO-8601 time") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=tz)


def period(config: Config, now: datetime, start: str | None, end: str | None) -> tuple[datetime, datetime]:
    """[start, end): defaults to the 7 days up to now; raises ValueError on nonsense."""
    tz = ZoneInfo(config.business_calendar.timezone)
    stop = parse_moment(end, tz) if end else now
    try:
        begin = parse_moment(start, tz) if start else stop - timedelta(days=7)
    except OverflowError as exc:  # "to=0001-01-02": there is no week before it
        raise ValueError("the period starts before the year 1") from exc
    if begin >= stop:
        raise ValueError("from must be before to")
    if stop - begin > timedelta(days=366):
        raise ValueError("a period is at most 366 days")
    return begin, stop


def _conversation_filter(stmt, scope: Scope):
    if scope.team is not None:
        stmt = stmt.where(Conversation.team_id == scope.team)
    if scope.agent is not None:
        stmt = stmt.where(Conversation.owner_id == scope.agent)
    return stmt


def _surveys(s: Session, start: datetime, end: datetime, ids: set[str]) -> list[kpis.SurveyRow] | None:
    """Survey rows from the notifier's `surveys` table when it exists (migration 0006), else None.

    The table is reflected rather than imported: its columns are read by name, so the report works
    whether or not the survey feature is installed. It needs kind, a score column (score or answer)
    and a sent time (sent_at or created_at); the conversation id narrows it to the scope.
    """
    bind = s.get_bind()
    if not inspect(bind).has_table("surveys"):
        return None
    # A fresh MetaData: reflection never touches the models' own.
    table = Table("surveys", MetaData(), autoload_with=bind)
    cols = table.c
    score = cols.get("score") if "score" in cols else cols.get("answer")
    sent = cols.get("sent_at") if "sent_at" in cols else cols.get("created_at")
    if "kind" not in cols or score is None or sent is None:
        return None
    stmt = select(cols.kind, score, cols.conversation_id if "conversation_id" in cols else cols.kind) \
        .where(sent >= start, sent < end)
    rows = []
    for kind, value, conv in s.execute(stmt):
        if "conversation_id" in cols and conv not in ids:
            continue
        rows.append(kpis.SurveyRow(kind=str(kind), score=int(value) if value is not None else None))
    return rows


def report(s: Session, config: Config, scope: Scope, start: datetime, end: datetime, now: datetime) -> dict:
    """Read the period's rows for the scope and compute the figures."""
    stmt = _conversation_filter(select(Conversation).where(Conversation.opened_at >= start,
                                                           Conversation.opened_at < end), scope)
    rows = [kpis.ConversationRow(id=c.id, channel=c.channel, category=c.category, language=c.language,
                                 team_id=c.team_id, owner_id=c.owner_id, opening=c.opening or 1,
                                 opened_at=c.opened_at, promise_due=c.promise_due,
                                 first_response_at=c.first_response_at, resolved_at=c.resolved_at,
                                 answerable=bool(c.reply_to))
            for c in s.scalars(stmt)]
    arrivals_stmt = _conversation_filter(
        select(Message.received_at).join(Conversation, Message.conversation_id == Conversation.id)
        .where(Message.direction == "in", Message.received_at >= start, Message.received_at < end), scope)
    arrivals = list(s.scalars(arrivals_stmt))
    agents = [a for a in config.agents.values()
              if (scope.agent is None or a.id == scope.agent) and (scope.team is None or a.team == scope.team)]
    open_now = dict(s.execute(select(Conversation.owner_id, func.count())
                              .where(Conversation.status == "open", Conversation.owner_id.is_not(None))
                              .group_by(Conversation.owner_id)).all())
    loads = [kpis.AgentLoad(a.id, a.name, a.capacity, open_now.get(a.id, 0)) for a in agents]
    owned = Counter(r.owner_id for r in rows if r.owner_id)
    result = kpis.compute(rows, arrivals, _surveys(s, start, end, {r.id for r in rows}), start=start, end=end,
                          now=now, calendar=config.business_calendar,
                          shifts={a.id: a.shift for a in agents if a.status == "active"}, loads=loads,
                          owned_in_period=owned)
    result["scope"] = {"team": scope.team, "agent": scope.agent}
    return result


FLAT_FIELDS = (
    ("conversations", ("conversations",)),
    ("first_response_median_s", ("first_response", "median_s")),
    ("first_response_p90_s", ("first_response", "p90_s")),
    ("promises_kept", ("promises", "kept")),
    ("promises_breached", ("promises", "breached")),
    ("promises_kept_pct", ("promises", "kept_pct")),
    ("resolution_median_s", ("resolution", "median_s")),
    ("resolution_p90_s", ("resolution", "p90_s")),
    ("reopen_rate_pct", ("reopen_rate_pct",)),
    ("csat_pct", ("surveys", "csat_pct")),
    ("nps", ("surveys", "nps")),
    ("survey_response_rate_pct", ("surveys", "response_rate_pct")),
    ("arrivals", ("arrivals", "total")),
    ("arrivals_when_nobody_on_shift", ("arrivals", "when_nobody_on_shift")),
)


def flat(result: dict) -> list[tuple[str, object]]:
    """The headline figures as (name, value) rows, then the volumes and loads: for table and CSV."""
    out: list[tuple[str, object]] = []
    for name, path in FLAT_FIELDS:
        value: object = result
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        out.append((name, value))
    for dim in ("channel", "category", "language"):
        out += [(f"volume.{dim}.{k}", v) for k, v in result["volume"][f"by_{dim}"].items()]
    for row in result["load"]:
        out.append((f"load.{row['agent_id']}.open_now", row["open_now"]))
        out.append((f"load.{row['agent_id']}.capacity", row["capacity"]))
        out.append((f"load.{row['agent_id']}.owned_in_period", row["owned_in_period"]))
    return out
