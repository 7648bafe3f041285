"""A scratch PostgreSQL database per test, on the server this machine kind starts before each
session and CI run (127.0.0.1:5432, trust auth). Unreachable: the test fails, naming what to do."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lily_dagster.bench.scratch_pg import DEFAULT_ADMIN_URL, scratch_database


def postgres_database(admin_url: str = DEFAULT_ADMIN_URL) -> Iterator[str]:
    import psycopg2

    try:
        psycopg2.connect(admin_url, connect_timeout=5).close()
    except psycopg2.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is needed at {admin_url} (Dagster's storage on Postgres) and does not "
            f"answer: {' '.join(str(exc).split())}. Start it (`service postgresql start`) "
            "and run the tests again.",
            pytrace=False,
        )
    with scratch_database(admin_url) as url:
        yield url
