"""Dagster's own storage (runs, event log, schedules and sensor ticks): SQLite under
$LILY_HOME/dagster by default, PostgreSQL when LILY_DAGSTER_PG_URL names a database.

A Postgres URL reaches Dagster's processes as an environment reference in dagster.yaml
(`postgres_url: {env: LILY_DAGSTER_SQLALCHEMY_URL}`), never written to disk: the user's URL with
psycopg2 named as its driver (SQLAlchemy 2.1 takes psycopg 3 for a bare `postgresql://`, and
dagster-postgres is built on psycopg2), set by `lily` for itself and the processes it starts.
Before any Dagster process starts, `check_reachable` proves the server answers and
`check_schema` that the schema is the installed Dagster's, each failure one line without the
password.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from lily_dagster.settings import ConfigError

PG_URL_VARIABLE = "LILY_DAGSTER_PG_URL"
SQLALCHEMY_URL_VARIABLE = "LILY_DAGSTER_SQLALCHEMY_URL"
CONNECT_TIMEOUT_S = 5

# Dagster's unified storage section: run, event-log and schedule storage in one database.
POSTGRES_STORAGE = {"storage": {"postgres": {"postgres_url": {"env": SQLALCHEMY_URL_VARIABLE}}}}


def sqlalchemy_url(url: str) -> str:
    """`url` with psycopg2 as its SQLAlchemy driver (a driver it names is kept)."""
    scheme, rest = url.split("://", 1)
    return f"postgresql+psycopg2://{rest}" if "+" not in scheme else url


def storage_environment(pg_url: str | None) -> dict[str, str]:
    """What Dagster's processes need in their environment for the storage of dagster.yaml."""
    return {SQLALCHEMY_URL_VARIABLE: sqlalchemy_url(pg_url)} if pg_url else {}


def where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 5432}{parts.path}"


def check_reachable(url: str) -> None:
    """ConfigError (one line) unless a connection to `url` opens within CONNECT_TIMEOUT_S."""
    import psycopg2

    try:
        psycopg2.connect(url, connect_timeout=CONNECT_TIMEOUT_S).close()
    except psycopg2.Error as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        password = urlsplit(url).password
        if password:
            reason = reason.replace(password, "***")
        raise ConfigError(
            f"{PG_URL_VARIABLE}: cannot reach PostgreSQL at {where(url)}: {reason}"
        ) from None


def outdated_storages(instance: Any) -> list[str]:
    """The instance's storages whose schema is not the installed Dagster's (alembic heads)."""
    storages = {
        "runs": instance.run_storage,
        "event log": instance.event_log_storage,
        "schedules": instance.schedule_storage,
    }
    outdated = []
    for name, storage in storages.items():
        version = getattr(storage, "alembic_version", None)
        if version is None:
            continue
        current, head = version()
        if current is not None and current != head:
            outdated.append(f"{name} at {current}, Dagster wants {head}")
    return outdated


def check_schema(instance: Any, url: str, dagster_home: str) -> None:
    """ConfigError (one line) when the database holds an older Dagster's schema."""
    outdated = outdated_storages(instance)
    if outdated:
        raise ConfigError(
            f"{PG_URL_VARIABLE}: the database at {where(url)} has an older Dagster's schema "
            f"({'; '.join(outdated)}): back it up, then migrate it with `dagster instance "
            f"migrate` (DAGSTER_HOME={dagster_home}, {SQLALCHEMY_URL_VARIABLE} set to the "
            "same URL as postgresql+psycopg2://...)"
        )
