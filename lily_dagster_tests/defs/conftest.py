"""Fixtures of the Dagster tests: an instance on each of Dagster's storages Lily supports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest
from dagster import DagsterInstance, instance_for_test

from lily_dagster.lib.dagster_storage import sqlalchemy_url

InstanceFactory = Callable[[], AbstractContextManager[DagsterInstance]]


@pytest.fixture(params=["sqlite", "postgres"])
def dagster_storage(request: pytest.FixtureRequest) -> InstanceFactory:
    """A test instance on SQLite (the local default) or on a scratch PostgreSQL database
    (LILY_DAGSTER_PG_URL in production): the end-to-end tests run on both."""
    if request.param == "sqlite":
        return instance_for_test
    url = sqlalchemy_url(request.getfixturevalue("postgres_url"))

    @contextmanager
    def on_postgres() -> Iterator[DagsterInstance]:
        overrides = {"storage": {"postgres": {"postgres_url": url}}}
        with instance_for_test(overrides=overrides) as instance:
            yield instance

    return on_postgres
