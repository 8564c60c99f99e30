"""Steps more than one migration takes, written once. Alembic reads only versions/, so this module
is no revision; migrations import it.

A migration must do tomorrow what it did the day it was written: change nothing here that a
migration already calls. A step that must differ is a new function, used by the new migration.
"""

from alembic import op


def mark_every_day_dirty() -> None:
    """Mark every UTC day on which a conversation opened as to be (re)built by the router's roll-up
    job (services/router/kpi_store.refresh_rollups), set-based. The job builds the local days around
    them, because the business's zone is in the config, not in the database; until a day is built
    the report reads its conversations, so the figures are exact before, during and after."""
    utc_day = ("CAST(opened_at AT TIME ZONE 'UTC' AS date)" if op.get_bind().dialect.name == "postgresql"
               else "date(opened_at)")
    op.execute(f"INSERT INTO kpi_dirty_days (utc_day) SELECT DISTINCT {utc_day} FROM conversations")
