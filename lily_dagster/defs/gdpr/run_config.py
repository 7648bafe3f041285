"""Keeping a data subject out of Dagster's run storage: a run's config is stored as it was
launched (the `runs` table's `run_body`), so a subject typed into the launchpad would stay
there in plaintext for as long as the run is kept. The erasure run replaces it, as its
first act, with the subject sealed by the tenant's key.

Dagster has no API to change a stored run's config; this rewrites the row with Dagster's
own serialiser, as `handle_run_event` does when a run changes status (which reads the row
back, so the change stays). SQLite keeps a rewritten row's old bytes in free space and in
its write-ahead log: `secure_delete` zeroes the freed space and a checkpoint folds the log
into the database, so the old value does not survive on disk (docs/gdpr.md says what other
storages keep).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as db
from dagster import DagsterInstance
from dagster._core.storage.runs.schema import RunsTable
from dagster._core.storage.runs.sql_run_storage import SqlRunStorage
from dagster._record import copy
from dagster._serdes import serialize_value


def replace_in_run_config(
    instance: DagsterInstance, run_id: str, key: str, old: str, new: str
) -> bool:
    """Replace the top-level `key` of the run's stored config when it is `old`; whether
    the stored run now holds `new` there (False: a run storage this cannot rewrite)."""
    run = instance.get_run_by_id(run_id)
    if run is None:
        return False
    config: Mapping[str, Any] = run.run_config or {}
    if config.get(key) != old:
        return config.get(key) == new
    storage = instance.run_storage
    inner = getattr(storage, "_storage", storage)  # an instance may wrap its storage
    if not isinstance(inner, SqlRunStorage):
        return False
    body = serialize_value(copy(run, run_config={**config, key: new}))
    sqlite = "sqlite" in type(inner).__name__.lower()
    with inner.connect() as conn:
        if sqlite:
            conn.execute(db.text("PRAGMA secure_delete=ON"))
        conn.execute(RunsTable.update().where(RunsTable.c.run_id == run_id).values(run_body=body))
    if sqlite:
        _checkpoint(inner)
    return True


def _checkpoint(storage: SqlRunStorage) -> None:
    """Fold SQLite's write-ahead log into the database and empty it (best effort: a reader
    holding an old snapshot keeps its pages until it lets go)."""
    engine = db.create_engine(storage._conn_string, poolclass=db.pool.NullPool)  # type: ignore[attr-defined]
    with engine.connect() as conn:
        conn.execute(db.text("PRAGMA wal_checkpoint(TRUNCATE)"))
