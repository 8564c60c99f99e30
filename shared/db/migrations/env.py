"""Alembic environment: runs on the connection handed over by shared.db.migrate, or on a URL."""

from alembic import context
from sqlalchemy import create_engine

from shared.db import Base, normalise_url

# Only autogenerate reads the metadata: the migrations are explicit scripts. To autogenerate, import
# the services' models first (each registers its tables on Base.metadata); shared/ imports nothing
# from services/.
target_metadata = Base.metadata


def run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        url = normalise_url(context.config.get_main_option("sqlalchemy.url") or "")
        with create_engine(url).connect() as connection:
            _run(connection)
            connection.commit()
    else:
        _run(connection)


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


run()
