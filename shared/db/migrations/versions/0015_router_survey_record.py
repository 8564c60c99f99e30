"""the router's record of surveys says where each went, its token and whether a comment is held, so
the router reads SMS digits and comments from its own table, not the notifier's

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversation_surveys") as batch:
        batch.add_column(sa.Column("channel", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("address", sa.String(length=320), nullable=True))
        batch.add_column(sa.Column("token", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("commented", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.create_index("ix_conversation_surveys_recipient", ["channel", "address", "sent_at"], unique=False)
    # The one time these are taken from the notifier's table: the surveys sent before this release
    # (0012 copied their rows). From now on the notifier's feedback.survey_result carries them.
    op.execute("UPDATE conversation_surveys SET "
               "channel = (SELECT s.channel FROM surveys s WHERE s.conversation_id = conversation_surveys.conversation_id "
               "AND s.opening = conversation_surveys.opening), "
               "address = (SELECT s.address FROM surveys s WHERE s.conversation_id = conversation_surveys.conversation_id "
               "AND s.opening = conversation_surveys.opening), "
               "token = (SELECT s.token FROM surveys s WHERE s.conversation_id = conversation_surveys.conversation_id "
               "AND s.opening = conversation_surveys.opening), "
               "commented = EXISTS (SELECT 1 FROM surveys s WHERE s.conversation_id = conversation_surveys.conversation_id "
               "AND s.opening = conversation_surveys.opening AND s.comment_source IS NOT NULL)")
    # Sent by the notifier but not yet reported to the router (to_report still set): they come on
    # the bus at its next tick, with all of the above.


def downgrade() -> None:
    with op.batch_alter_table("conversation_surveys") as batch:
        batch.drop_index("ix_conversation_surveys_recipient")
        batch.drop_column("commented")
        batch.drop_column("token")
        batch.drop_column("address")
        batch.drop_column("channel")
