"""Dagster's storage on PostgreSQL (LILY_DAGSTER_PG_URL), from the outside: the `lily`
commands, the environment, Kafka, and the database itself (the server this machine starts at
127.0.0.1:5432). A server that does not answer, a database holding an older Dagster's schema
or a malformed URL: `lily` fails at start with one line, never showing the password, and starts
nothing."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg2

from lily_dagster_tests.contract import outside
from lily_dagster_tests.support.envelopes import envelope

TOPIC = "lily.metadata.events"


def one_line_error(proc: object) -> str:
    stderr = getattr(proc, "stderr", "")
    assert getattr(proc, "returncode", 0) != 0
    (line,) = stderr.strip().splitlines()
    assert line.startswith("lily: error: LILY_DAGSTER_PG_URL"), line
    return str(line)


def stack_environment(tmp_path: Path, postgres_url: str) -> tuple[int, dict[str, str]]:
    """A free port for the broker, and the environment of a stack on it and on Postgres."""
    port = outside.free_port()
    env = outside.clean_environment(
        LILY_HOME=str(tmp_path / "home"),
        LILY_KAFKA_BOOTSTRAP=f"127.0.0.1:{port}",
        LILY_KAFKA_TOPICS=TOPIC,
        LILY_DAGSTER_PG_URL=postgres_url,
    )
    return port, env


def test_runs_and_events_live_in_postgres_and_the_hub_fills_as_on_sqlite(
    tmp_path: Path, postgres_url: str
) -> None:
    port, env = stack_environment(tmp_path, postgres_url)
    tables = [f"default/snowflake/1700000000/DB/SCH/T{i}" for i in range(5)]
    with outside.processes() as started:
        started.append(outside.start_broker(port, env, tmp_path / "broker.log"))
        messages = [(b"acme", json.dumps(envelope(t)).encode()) for t in tables]
        outside.produce(f"127.0.0.1:{port}", TOPIC, messages)
        run = outside.run_until_idle(env, timeout_s=240)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.summary()["runs"]["success"] >= 1
    assert sorted(r["qualified_name"] for r in outside.hub_export(env, "acme")) == tables
    with psycopg2.connect(postgres_url) as con, con.cursor() as cur:
        cur.execute("SELECT count(*) FROM runs WHERE status = 'SUCCESS'")
        (runs,) = cur.fetchone() or (0,)
        cur.execute(
            "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'"
        )
        (materialisations,) = cur.fetchone() or (0,)
    assert runs == run.summary()["runs"]["success"] and materialisations > 0
    # Nothing of Dagster's own storage on disk: no SQLite runs or event logs.
    dagster_home = tmp_path / "home" / "dagster"
    assert not list(dagster_home.rglob("*.db")), list(dagster_home.rglob("*.db"))
    assert postgres_url.split("@")[-1] not in (dagster_home / "dagster.yaml").read_text()


def test_an_unreachable_server_fails_at_start_in_one_line_without_the_password(
    tmp_path: Path,
) -> None:
    closed = outside.free_port()
    url = f"postgresql://lily:s3cret-pw@127.0.0.1:{closed}/dagster"
    env = outside.clean_environment(LILY_HOME=str(tmp_path / "home"), LILY_DAGSTER_PG_URL=url)
    proc = outside.lily("run", "--until-idle", "--timeout", "5", env=env, timeout=60)
    line = one_line_error(proc)
    assert f"cannot reach PostgreSQL at 127.0.0.1:{closed}/dagster" in line
    assert "s3cret-pw" not in proc.stderr + proc.stdout
    assert not (tmp_path / "home" / "dagster").exists()  # nothing started, nothing written


def test_a_malformed_url_is_refused_by_every_command_without_the_password(
    tmp_path: Path,
) -> None:
    env = outside.clean_environment(
        LILY_HOME=str(tmp_path / "home"), LILY_DAGSTER_PG_URL="mysql://lily:s3cret-pw@db/x"
    )
    for args in (("run", "--until-idle"), ("hub", "export", "--tenant", "acme")):
        proc = outside.lily(*args, env=env, timeout=60)
        line = one_line_error(proc)
        assert "expected postgresql://" in line and "s3cret-pw" not in proc.stderr


def test_an_older_dagster_schema_fails_at_start_naming_the_migration(
    tmp_path: Path, postgres_url: str
) -> None:
    port, env = stack_environment(tmp_path, postgres_url)
    with outside.processes() as started:
        started.append(outside.start_broker(port, env, tmp_path / "broker.log"))
        first = outside.run_until_idle(env, timeout_s=60)
        assert first.returncode == 0, first.stderr[-2000:]  # an empty database is initialised
        with psycopg2.connect(postgres_url) as con, con.cursor() as cur:
            # As a database an older Dagster left: its alembic revision is not the head.
            cur.execute("UPDATE alembic_version SET version_num = 'f495c27d5019'")
        proc = outside.lily("run", "--until-idle", "--timeout", "5", env=env, timeout=120)
    line = one_line_error(proc)
    assert "older Dagster's schema" in line and "dagster instance migrate" in line
