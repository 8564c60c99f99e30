"""Who may see what, in one place for the agent API and the inbox: an agent sees the conversations
they own, a lead also those of the teams they lead, and everyone sees automatic mail (bounces,
auto-replies, spam: it came to the shared mailbox and belongs to nobody). The KPIs scope a lead's
figures by the same `led_teams`.

`may_see` answers for one loaded conversation, `visible_to` is the same rule as a WHERE clause, so a
list and a detail page can never disagree.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, or_

from services.router import automatic
from services.router.models import Conversation
from shared.config import Agent, Config


def led_teams(agent: Agent, config: Config) -> set[str]:
    """The teams an agent leads: those naming them as lead, and their own team when their role is lead."""
    teams = {t.id for t in config.teams.values() if t.lead == agent.id}
    if agent.role == "lead":
        teams.add(agent.team)
    return teams


def may_see(agent: Agent, conv: Conversation, config: Config) -> bool:
    # Automatic mail (bounces, auto-replies, spam) came to the shared mailbox and belongs to nobody:
    # every agent may look at it (services.router.automatic).
    return (conv.owner_id == agent.id or (conv.team_id is not None and conv.team_id in led_teams(agent, config))
            or conv.status == automatic.STATUS)


def visible_to(agent: Agent, config: Config) -> ColumnElement[bool]:
    """`may_see` as a WHERE clause on Conversation: the agent's own, their led teams', automatic mail."""
    teams = led_teams(agent, config)
    mine = or_(Conversation.owner_id == agent.id, Conversation.status == automatic.STATUS)
    return or_(mine, Conversation.team_id.in_(teams)) if teams else mine
