"""The snowflake target: statements rendered with every name and value quoted, then the
COMMENT statements executed by a real SQL engine (DuckDB) and read back from its catalog,
hostile text included."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path
from typing import Any

import duckdb
import pytest

from lily_dagster.lib.targets import (
    DeliveryContext,
    TargetRejectedError,
    TargetUnavailableError,
    get_target,
)
from lily_dagster.lib.targets.builtin.snowflake import (
    SnowflakeOptions,
    execute_statements,
    quote_identifier,
    render_statements,
    split_qualified_name,
    string_literal,
    tag_name,
)
from lily_dagster.settings import ConfigError, TargetConfig
from lily_dagster_tests.lib.targets.changes import change_frame

CONN = "default/snowflake/1700000000"
SCH = f"{CONN}/DB/SCH"
CTX = DeliveryContext(tenant="acme", target="warehouse", idempotency_key="k1", timeout_s=5)
TAGS = SnowflakeOptions(tag_schema=("GOVERNANCE", "TAGS"))
HOSTILE = 'x"; DROP TABLE t; --'
HOSTILE_TEXT = (
    "it's a 'quote', a \\ backslash, \\' and \\n literally,\nnew line; -- ünïcödé 名前 😀"
)

# The body of a Snowflake string constant: no lone quote, every backslash an escape.
SNOWFLAKE_BODY = re.compile(r"(?:[^'\\\n\r]|''|\\[\\nrt])*")


def test_identifiers_are_always_double_quoted() -> None:
    assert quote_identifier("ORDERS") == '"ORDERS"'
    assert quote_identifier(HOSTILE) == '"x""; DROP TABLE t; --"'
    assert quote_identifier('a"b"') == '"a""b"""'
    assert quote_identifier("名前 with space") == '"名前 with space"'
    for bad in ("", "a\x00b"):
        with pytest.raises(ValueError):
            quote_identifier(bad)


@pytest.mark.parametrize(
    ("value", "snowflake", "duckdb_literal"),
    [
        ("plain", "'plain'", "'plain'"),
        ("it's", "'it''s'", "'it''s'"),
        ("a\\b", "'a\\\\b'", "'a\\b'"),
        ("\\'", "'\\\\'''", "'\\'''"),
        ("l1\nl2\r\tx", "'l1\\nl2\\r\\tx'", "'l1\nl2\r\tx'"),
        ("nul\x00dropped", "'nuldropped'", "'nuldropped'"),
        ("ünï 😀", "'ünï 😀'", "'ünï 😀'"),
    ],
)
def test_string_literals(value: str, snowflake: str, duckdb_literal: str) -> None:
    assert string_literal(value, "snowflake") == snowflake
    assert string_literal(value, "duckdb") == duckdb_literal
    assert SNOWFLAKE_BODY.fullmatch(string_literal(value, "snowflake")[1:-1])


def test_tag_names_are_identifier_safe() -> None:
    assert tag_name("PII") == "PII"
    assert tag_name("PII:email") == "PII_EMAIL"
    assert tag_name("GDPR:personal-data") == "GDPR_PERSONAL_DATA"
    assert tag_name("9lives") == "_9LIVES"
    assert tag_name(HOSTILE) == "X___DROP_TABLE_T____"
    assert tag_name(" : ") is None


def test_split_qualified_name() -> None:
    table = split_qualified_name(f"{SCH}/ORDERS", column=False)
    assert table is not None and (table.database, table.schema, table.table) == (
        "DB",
        "SCH",
        "ORDERS",
    )
    column = split_qualified_name(f"{SCH}/ORDERS/EMAIL", column=True)
    assert column is not None and column.column == "EMAIL"
    assert column.relation == f"{SCH}/ORDERS" and column.connector == "snowflake"
    # A table whose name holds `/` does not pass for a column, nor a column for a table.
    assert split_qualified_name(f"{SCH}/A/B", column=False) is None
    assert split_qualified_name(f"{SCH}/ORDERS", column=True) is None
    assert split_qualified_name(f"{CONN}/DB//ORDERS", column=False) is None


def test_render_statements() -> None:
    changes = change_frame(
        [
            {
                "qualified_name": f"{SCH}/ORDERS",
                "change": "created",
                "attributes": {"description": "Orders."},
                "classifications": ["PII", "GDPR:personal-data"],
            },
            {
                "qualified_name": f"{SCH}/ORDERS/EMAIL",
                "type_name": "Column",
                "attributes": {"description": "E-mail", "table_name": "ORDERS"},
                "classifications": ["PII:email"],
                "changed": ["description", "classifications"],
                "before": {"description": "old", "classifications": ["PII", "PII:email"]},
            },
            {
                "qualified_name": f"{SCH}/V_ORDERS",
                "type_name": "View",
                "attributes": {"user_description": "Shown first", "description": "crawled"},
                "changed": ["attributes"],
            },
            {
                "qualified_name": f"{SCH}/V_ORDERS/ID",
                "type_name": "Column",
                "attributes": {"view_name": "V_ORDERS", "description": "Key"},
                "classifications": ["Key"],
                "changed": ["description", "classifications"],
                "before": {"classifications": []},
            },
            {
                "qualified_name": f"{SCH}/MV",
                "type_name": "MaterialisedView",
                "change": "created",
                "attributes": {"description": "Daily."},
            },
            {  # the description was removed: the comment is cleared
                "qualified_name": f"{SCH}/OLD_DOC",
                "changed": ["description"],
                "before": {"description": "gone"},
            },
            {  # only owners changed: nothing for the warehouse
                "qualified_name": f"{SCH}/OWNERS",
                "attributes": {"description": "same", "owner_users": ["jdoe"]},
                "changed": ["owner_users"],
            },
            {"qualified_name": f"{SCH}/DROPPED", "change": "archived"},
            {
                "qualified_name": "default/postgres/1700000000/DB/SCH/ORDERS",
                "attributes": {"description": "other warehouse"},
            },
            {"qualified_name": f"{CONN}/DB/SCH", "type_name": "Schema"},
            {  # a new column without a description gets no empty comment
                "qualified_name": f"{SCH}/ORDERS/ID",
                "type_name": "Column",
                "change": "created",
            },
        ]
    )
    t = '"DB"."SCH"'
    g = '"GOVERNANCE"."TAGS"'
    assert render_statements(changes, TAGS) == [
        f"COMMENT ON TABLE {t}.\"ORDERS\" IS 'Orders.'",
        f'ALTER TABLE {t}."ORDERS" SET TAG {g}."GDPR_PERSONAL_DATA" = \'true\', '
        f"{g}.\"PII\" = 'true'",
        f'COMMENT ON COLUMN {t}."ORDERS"."EMAIL" IS \'E-mail\'',
        f'ALTER TABLE {t}."ORDERS" MODIFY COLUMN "EMAIL" SET TAG {g}."PII_EMAIL" = \'true\'',
        f'ALTER TABLE {t}."ORDERS" MODIFY COLUMN "EMAIL" UNSET TAG {g}."PII"',
        f"COMMENT ON VIEW {t}.\"V_ORDERS\" IS 'Shown first'",
        f'ALTER VIEW {t}."V_ORDERS" ALTER COLUMN "ID" COMMENT \'Key\'',
        f'ALTER VIEW {t}."V_ORDERS" MODIFY COLUMN "ID" SET TAG {g}."KEY" = \'true\'',
        f"ALTER MATERIALIZED VIEW {t}.\"MV\" SET COMMENT = 'Daily.'",
        f"COMMENT ON TABLE {t}.\"OLD_DOC\" IS ''",
    ]


def test_render_options() -> None:
    rows = [
        {
            "qualified_name": f"{SCH}/ORDERS",
            "attributes": {"description": "first"},
            "classifications": ["PII"],
        },
        {"qualified_name": f"{CONN}/OTHER/SCH/T", "attributes": {"description": "other db"}},
        {  # the record's last change in the batch wins
            "qualified_name": f"{SCH}/ORDERS",
            "attributes": {"description": "second"},
            "classifications": ["PII", "Finance"],
        },
    ]
    changes = change_frame(rows)
    no_tags = SnowflakeOptions(tags=False)
    assert render_statements(changes, no_tags) == [
        'COMMENT ON TABLE "OTHER"."SCH"."T" IS \'other db\'',
        'COMMENT ON TABLE "DB"."SCH"."ORDERS" IS \'second\'',
    ]
    scoped = SnowflakeOptions(tags=False, scope=(f"{CONN}/DB",))
    assert render_statements(changes, scoped) == [
        'COMMENT ON TABLE "DB"."SCH"."ORDERS" IS \'second\''
    ]
    creating = SnowflakeOptions(descriptions=False, tag_schema=("G", "T"), create_tags=True)
    assert render_statements(changes, creating) == [
        'CREATE TAG IF NOT EXISTS "G"."T"."FINANCE"',
        'CREATE TAG IF NOT EXISTS "G"."T"."PII"',
        'ALTER TABLE "DB"."SCH"."ORDERS" SET TAG "G"."T"."FINANCE" = \'true\', '
        '"G"."T"."PII" = \'true\'',
    ]


def test_render_hostile_names_and_text() -> None:
    changes = change_frame(
        [
            {
                "qualified_name": f"{CONN}/D'B/S\"CH/{HOSTILE}",
                "attributes": {"description": HOSTILE_TEXT},
                "classifications": [HOSTILE, "PII'; --"],
            },
            {
                "qualified_name": f"{CONN}/D'B/S\"CH/{HOSTILE}/c\"ol'; --",
                "type_name": "Column",
                "attributes": {"description": "'); DROP TABLE t; --"},
            },
        ]
    )
    statements = render_statements(changes, SnowflakeOptions(tag_schema=('G"X', "T'S")))
    relation = '"D\'B"."S""CH"."x""; DROP TABLE t; --"'
    assert statements == [
        f"COMMENT ON TABLE {relation} IS "
        "'it''s a ''quote'', a \\\\ backslash, \\\\'' and \\\\n literally,\\nnew line; -- "
        "ünïcödé 名前 😀'",
        f'ALTER TABLE {relation} SET TAG "G""X"."T\'S"."PII_____" = \'true\', '
        f'"G""X"."T\'S"."X___DROP_TABLE_T____" = \'true\'',
        f"COMMENT ON COLUMN {relation}.\"c\"\"ol'; --\" IS '''); DROP TABLE t; --'",
    ]
    for statement in statements:
        assert "\n" not in statement


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    """A DuckDB file whose catalog is `DB`, with hostile schema, table and column names."""
    path = tmp_path / "DB.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute('CREATE SCHEMA "SCH"')
        con.execute('CREATE TABLE "SCH"."ORDERS" ("EMAIL" VARCHAR, "ID" INTEGER)')
        con.execute('CREATE TABLE "SCH"."t" (x INTEGER)')
        con.execute('CREATE VIEW "SCH"."V_ORDERS" AS SELECT 1 AS "ID"')
        con.execute('CREATE SCHEMA "s""ch; --"')
        con.execute(
            'CREATE TABLE "s""ch; --"."x""; DROP TABLE t; --" '
            '("e""mail\'; --" VARCHAR, "名前 😀" VARCHAR, "back\\slash" VARCHAR)'
        )
    return path


def duckdb_target(warehouse: Path) -> Any:
    config = TargetConfig(
        name="warehouse", type="snowflake", connection="duckdb", database=str(warehouse), tags=False
    )
    return get_target("snowflake").configure(config)


def comments(warehouse: Path) -> dict[tuple[str, ...], str | None]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        tables = con.execute(
            "SELECT schema_name, table_name, comment FROM duckdb_tables() "
            "UNION ALL SELECT schema_name, view_name, comment FROM duckdb_views() "
            "WHERE database_name = 'DB' AND NOT internal"
        ).fetchall()
        columns = con.execute(
            "SELECT schema_name, table_name, column_name, comment FROM duckdb_columns() "
            "WHERE database_name = 'DB'"
        ).fetchall()
    found: dict[tuple[str, ...], str | None] = {(s, t): c for s, t, c in tables}
    found.update({(s, t, c): comment for s, t, c, comment in columns})
    return found


def test_duckdb_executes_the_comments_with_hostile_text(warehouse: Path) -> None:
    hostile_table = f'{CONN}/DB/s"ch; --/{HOSTILE}'
    changes = change_frame(
        [
            {
                "qualified_name": f"{SCH}/ORDERS",
                "attributes": {"description": HOSTILE_TEXT},
                "classifications": ["PII"],
            },
            {
                "qualified_name": f"{SCH}/ORDERS/EMAIL",
                "type_name": "Column",
                "attributes": {"description": 'E-mail; it\'s "PII"'},
            },
            {
                "qualified_name": f"{SCH}/V_ORDERS",
                "type_name": "View",
                "attributes": {"description": "A view\\n"},
            },
            {
                "qualified_name": f"{SCH}/V_ORDERS/ID",
                "type_name": "Column",
                "attributes": {"description": "view column", "view_name": "V_ORDERS"},
            },
            {"qualified_name": hostile_table, "attributes": {"description": "'); DROP TABLE t;--"}},
            {
                "qualified_name": f"{hostile_table}/e\"mail'; --",
                "type_name": "Column",
                "attributes": {"description": 'x"; DROP TABLE t; --'},
            },
            {
                "qualified_name": f"{hostile_table}/名前 😀",
                "type_name": "Column",
                "attributes": {"description": "名前 😀\r\n\ttabbed"},
            },
            {
                "qualified_name": f"{hostile_table}/back\\slash",
                "type_name": "Column",
                "attributes": {"description": "C:\\path\\to\\file \\\\ \\'"},
            },
        ]
    )
    get_target("snowflake").deliver(changes, duckdb_target(warehouse), CTX)
    found = comments(warehouse)
    assert found[("SCH", "ORDERS")] == HOSTILE_TEXT
    assert found[("SCH", "ORDERS", "EMAIL")] == 'E-mail; it\'s "PII"'
    assert found[("SCH", "V_ORDERS")] == "A view\\n"
    assert found[("SCH", "V_ORDERS", "ID")] == "view column"
    assert found[('s"ch; --', HOSTILE)] == "'); DROP TABLE t;--"
    assert found[('s"ch; --', HOSTILE, "e\"mail'; --")] == 'x"; DROP TABLE t; --'
    assert found[('s"ch; --', HOSTILE, "名前 😀")] == "名前 😀\r\n\ttabbed"
    assert found[('s"ch; --', HOSTILE, "back\\slash")] == "C:\\path\\to\\file \\\\ \\'"
    # Nothing was dropped, nothing else commented.
    assert ("SCH", "t") in found and found[("SCH", "t")] is None
    assert found[("SCH", "ORDERS", "ID")] is None


def test_refused_statement_rejects_the_batch_and_rolls_back(warehouse: Path) -> None:
    changes = change_frame(
        [
            {"qualified_name": f"{SCH}/ORDERS", "attributes": {"description": "applied?"}},
            {"qualified_name": f"{SCH}/MISSING", "attributes": {"description": "no table"}},
        ]
    )
    with pytest.raises(TargetRejectedError) as caught:
        get_target("snowflake").deliver(changes, duckdb_target(warehouse), CTX)
    assert 'COMMENT ON TABLE "DB"."SCH"."MISSING" IS \'no table\'' in str(caught.value)
    assert comments(warehouse)[("SCH", "ORDERS")] is None  # one transaction: rolled back


def test_unavailable_engine_is_retried_later(warehouse: Path) -> None:
    changes = change_frame(
        [{"qualified_name": f"{SCH}/ORDERS", "attributes": {"description": "x"}}]
    )
    settings = duckdb_target(warehouse)
    warehouse.unlink()
    warehouse.mkdir()  # a directory where the database was: the engine cannot open it
    with pytest.raises(TargetUnavailableError, match="cannot connect"):
        get_target("snowflake").deliver(changes, settings, CTX)


class _Cursor:
    def __init__(self, error: BaseException | None) -> None:
        self.error = error
        self.executed: list[str] = []

    def execute(self, statement: str) -> None:
        if self.error is not None and statement not in ("BEGIN TRANSACTION", "ROLLBACK"):
            raise self.error
        self.executed.append(statement)


class _Connection:
    def __init__(self, error: BaseException | None = None) -> None:
        self.cursor_ = _Cursor(error)
        self.events: list[str] = []

    def cursor(self) -> _Cursor:
        return self.cursor_

    def close(self) -> None:
        self.events.append("close")


class ProgrammingError(Exception):  # named as a DB-API driver names it
    pass


def test_errors_are_classified_by_db_api_class() -> None:
    def failing(exc: BaseException) -> _Connection:
        return _Connection(exc)

    with pytest.raises(TargetUnavailableError, match="failed SELECT 1: disk I/O"):
        execute_statements(
            ["SELECT 1"],
            lambda t: failing(duckdb.IOException("disk I/O")),
            1,
            transactional=True,
        )
    connection = _Connection(ProgrammingError("syntax error"))
    with pytest.raises(TargetRejectedError, match="refused SELECT 1: syntax error"):
        execute_statements(["SELECT 1"], lambda t: connection, 1, transactional=True)
    assert connection.cursor_.executed == ["BEGIN TRANSACTION", "ROLLBACK"]
    assert connection.events == ["close"]
    with pytest.raises(TypeError):  # a bug is not the engine's answer
        execute_statements(["S"], lambda t: failing(TypeError("bug")), 1, transactional=False)

    def refuse(timeout_s: float) -> Any:
        raise OSError("connection refused")

    with pytest.raises(TargetUnavailableError, match="cannot connect: connection refused"):
        execute_statements(["SELECT 1"], refuse, 1, transactional=False)
    ok = _Connection()
    execute_statements(["A", "B"], lambda t: ok, 1, transactional=True)
    assert ok.cursor_.executed == ["BEGIN TRANSACTION", "A", "B", "COMMIT"]
    assert ok.events == ["close"]
    execute_statements([], refuse, 1, transactional=False)  # nothing to do: no connection


@pytest.fixture
def fake_connector(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """`snowflake.connector` stand-in (the real package is not installed here)."""
    calls: list[dict[str, Any]] = []
    connection = _Connection()

    def connect(**params: Any) -> _Connection:
        calls.append({"params": params, "connection": connection})
        return connection

    package = types.ModuleType("snowflake")
    connector = types.ModuleType("snowflake.connector")
    connector.connect = connect  # type: ignore[attr-defined]
    package.connector = connector  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "snowflake", package)
    monkeypatch.setitem(sys.modules, "snowflake.connector", connector)
    return calls


def test_snowflake_connection(
    fake_connector: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SF_PASSWORD", "s3cret")
    monkeypatch.setenv("SF_ACCOUNT", "acme-xy12345")
    config = TargetConfig(
        name="warehouse",
        type="snowflake",
        account_env="SF_ACCOUNT",
        user="LILY",
        role="GOVERNANCE_ADMIN",
        warehouse="ADMIN_WH",
        password_env="SF_PASSWORD",
        tag_schema="GOVERNANCE.TAGS",
    )
    settings = get_target("snowflake").configure(config)
    changes = change_frame(
        [
            {
                "qualified_name": f"{SCH}/ORDERS",
                "attributes": {"description": "d"},
                "classifications": ["PII"],
            }
        ]
    )
    get_target("snowflake").deliver(changes, settings, CTX)
    (call,) = fake_connector
    assert call["params"] == {
        "account": "acme-xy12345",
        "user": "LILY",
        "role": "GOVERNANCE_ADMIN",
        "warehouse": "ADMIN_WH",
        "password": "s3cret",
        "login_timeout": 5,
        "network_timeout": 5,
        "session_parameters": {"QUERY_TAG": "lily"},
    }
    # Snowflake commits each DDL statement itself: no transaction around them.
    assert call["connection"].cursor_.executed == [
        'COMMENT ON TABLE "DB"."SCH"."ORDERS" IS \'d\'',
        'ALTER TABLE "DB"."SCH"."ORDERS" SET TAG "GOVERNANCE"."TAGS"."PII" = \'true\'',
    ]
    assert call["connection"].events == ["close"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"connection": "duckdb", "database": "{db}"}, "DuckDB has no tags: set tags: false"),
        ({"connection": "duckdb", "tags": False}, "needs database"),
        ({"connection": "duckdb", "database": "/nonexistent/x.duckdb", "tags": False}, "no such"),
        ({"connection": "oracle"}, "connection must be one of"),
        ({"connection": "duckdb", "database": "{db}", "tags": False, "user": "x"}, "unknown"),
        ({"user": "u", "password_env": "SF_PASSWORD"}, "needs account"),
        ({"account": "a", "user": "u", "password": "plain"}, "password is a secret"),
        ({"account": "a", "user": "u", "password_env": "UNSET_VAR"}, "UNSET_VAR"),
        ({"account": "a", "user": "u"}, "needs password_env"),
        ({"account": "a", "user": "u", "password_env": "SF_PASSWORD"}, "tag_schema must be"),
        (
            {"account": "a", "user": "u", "secret_env": "SF_PASSWORD", "tag_schema": "ONLY"},
            "tag_schema must be DATABASE.SCHEMA",
        ),
    ],
)
def test_configure_errors(
    options: dict[str, Any],
    message: str,
    warehouse: Path,
    fake_connector: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SF_PASSWORD", "s3cret")
    monkeypatch.delenv("UNSET_VAR", raising=False)
    options = {k: v.format(db=warehouse) if isinstance(v, str) else v for k, v in options.items()}
    config = TargetConfig(name="warehouse", type="snowflake", **options)
    with pytest.raises(ConfigError, match=message) as caught:
        get_target("snowflake").configure(config)
    assert "\n" not in str(caught.value)


def test_connector_is_needed_only_for_snowflake_connections(
    warehouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "snowflake", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "snowflake.connector", None)
    duckdb_target(warehouse)  # no import of snowflake.connector
    config = TargetConfig(name="w", type="snowflake", account="a", user="u", tags=False)
    with pytest.raises(ConfigError, match="pip install snowflake-connector-python"):
        get_target("snowflake").configure(config)
