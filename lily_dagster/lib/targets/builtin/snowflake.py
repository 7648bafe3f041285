"""snowflake target: the hub's descriptions and classifications written back to Snowflake as
object comments (`COMMENT ON TABLE|VIEW|COLUMN`) and object tags (`ALTER ... SET TAG`), so
people querying the warehouse see what the catalogue knows.

Statements are rendered by a pure function (`render_statements`) and executed through any
DB-API 2.0 connection: `snowflake.connector` in production (the `snowflake-connector-python`
package, installed separately: `pip install snowflake-connector-python`, imported only when
a target uses `connection: snowflake`), or DuckDB (`connection: duckdb`) for tests and local
dry runs. DuckDB has comments but no tags, so it runs with `tags: false`.

Every identifier is double-quoted (embedded `"` doubled) and every value is a single-quoted
literal (`'` doubled; backslashes and control characters escaped for Snowflake, whose string
constants treat `\\` as an escape): nothing from a change is ever interpolated unquoted.

The helpers in the first section (qualified names, descriptions, option parsing) are
shared with the dbt target.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import Field, model_validator

from lily_dagster.lib.plugins import PluginOptions, parse_options
from lily_dagster.lib.targets import (
    DeliveryContext,
    TargetRejectedError,
    TargetUnavailableError,
    register_target,
)
from lily_dagster.lib.targets.records import (
    COLUMN_TYPE,
    RELATION_KEYWORDS,
    QualifiedName,
    Scope,
    in_scope,
    json_object,
    record_description,
    split_qualified_name,
    touches,
)
from lily_dagster.settings import ConfigError, TargetConfig, env_secret

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------

Dialect = Literal["snowflake", "duckdb"]
TAG_VALUE = "true"


def quote_identifier(name: str) -> str:
    """A double-quoted identifier (case-sensitive, any character; `"` doubled)."""
    if not name or "\x00" in name:
        raise ValueError(f"not a usable identifier: {name!r}")
    return '"' + name.replace('"', '""') + '"'


_SNOWFLAKE_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def string_literal(value: str, dialect: Dialect) -> str:
    """A single-quoted string constant. Snowflake reads backslash escapes inside string
    constants, so backslashes are doubled and line breaks written as escapes (statements stay
    on one line); DuckDB's standard strings take everything literally but `'`. NUL characters
    are dropped: neither engine keeps them in comments."""
    value = value.replace("\x00", "")
    if dialect == "snowflake":
        value = value.translate(_SNOWFLAKE_ESCAPES)
    return "'" + value.replace("'", "''") + "'"


def tag_name(classification: str) -> str | None:
    """A classification as a tag identifier a person can also type unquoted: upper case,
    characters other than letters, digits and `_` as `_` (`PII:email` -> `PII_EMAIL`)."""
    name = re.sub(r"[^A-Z0-9_]", "_", classification.strip().upper())
    if not name.strip("_"):
        return None
    return "_" + name if name[0].isdigit() else name


@dataclass(frozen=True)
class SnowflakeOptions:
    """What `render_statements` writes (the target's options, parsed)."""

    dialect: Dialect = "snowflake"
    descriptions: bool = True
    tags: bool = True
    tag_schema: tuple[str, str] | None = None  # (database, schema) holding the tags
    create_tags: bool = False
    scope: tuple[str, ...] = ()


@dataclass
class _Record:
    """The last state of one hub record in a batch, with what the batch's changes touched."""

    name: QualifiedName
    type_name: str
    archived: bool
    attributes: dict[str, Any]
    classifications: list[str]
    describe: bool = False  # the batch may have changed the description
    description_changed: bool = False  # ... and says it did (a removal clears the comment)
    tag: bool = False
    previous_classifications: set[str] = field(default_factory=set)


def _records(changes: pl.DataFrame, scope: tuple[str, ...]) -> list[_Record]:
    """One entry per record, in the order of its last change in the batch: statements are
    written from the record's latest state, so earlier changes of the batch only matter for
    what they touched and which classifications they removed."""
    records: dict[str, _Record] = {}
    for row in changes.iter_rows(named=True):
        qn, type_name = row["qualified_name"], row["type_name"]
        if type_name not in RELATION_KEYWORDS and type_name != COLUMN_TYPE:
            continue
        name = split_qualified_name(qn, column=type_name == COLUMN_TYPE)
        if name is None or name.connector != "snowflake" or not in_scope(qn, scope):
            logger.debug("snowflake target: %s (%s) is not in scope", qn, type_name)
            continue
        previous = records.pop(qn, None)
        # A created or restored object (perhaps re-created at the source) gets everything.
        changed = [] if row["change"] in ("created", "restored") else row["changed"] or []
        before = json_object(row["before"])
        record = _Record(
            name=name,
            type_name=type_name,
            archived=row["change"] == "archived" or row["status"] == "DELETED",
            attributes=json_object(row["attributes"]),
            classifications=list(row["classifications"] or []),
            describe=touches(changed, "description"),
            description_changed=any("description" in c.lower() for c in changed)
            or record_description(before) is not None,
            tag=touches(changed, "classification"),
        )
        was = before.get("classifications")
        if isinstance(was, list):
            record.previous_classifications = {c for c in was if isinstance(c, str)}
        if previous is not None:
            record.describe |= previous.describe
            record.description_changed |= previous.description_changed
            record.tag |= previous.tag
            record.previous_classifications |= previous.previous_classifications
        records[qn] = record
    return list(records.values())


def _relation_sql(name: QualifiedName) -> str:
    return ".".join(quote_identifier(p) for p in (name.database, name.schema, name.table))


def _column_parent_keyword(attributes: Mapping[str, Any]) -> str:
    """TABLE or VIEW for a column's `ALTER ... MODIFY COLUMN`: a column names its view in
    Atlan's `view_name` / `view_qualified_name` attributes."""
    return (
        "VIEW" if attributes.get("view_name") or attributes.get("view_qualified_name") else "TABLE"
    )


def _record_statements(record: _Record, options: SnowflakeOptions) -> list[str]:
    lit = lambda value: string_literal(value, options.dialect)  # noqa: E731
    relation = _relation_sql(record.name)
    column = record.name.column
    statements: list[str] = []
    if options.descriptions and record.describe:
        description = record_description(record.attributes)
        has_key = "description" in record.attributes or "user_description" in record.attributes
        # A record without a description clears the comment only when the batch removed it:
        # a new column without one gets no empty comment.
        if description is not None or has_key or record.description_changed:
            text = lit(description or "")
            column_sql = quote_identifier(column) if column is not None else ""
            view_column = _column_parent_keyword(record.attributes) == "VIEW"
            if column is not None and view_column and options.dialect == "snowflake":
                # Snowflake's COMMENT ON COLUMN is for table columns.
                statements.append(f"ALTER VIEW {relation} ALTER COLUMN {column_sql} COMMENT {text}")
            elif column is not None:
                statements.append(f"COMMENT ON COLUMN {relation}.{column_sql} IS {text}")
            elif record.type_name in ("MaterialisedView", "MaterializedView"):
                statements.append(f"ALTER MATERIALIZED VIEW {relation} SET COMMENT = {text}")
            else:
                keyword = RELATION_KEYWORDS[record.type_name]
                statements.append(f"COMMENT ON {keyword} {relation} IS {text}")
    if options.tags and options.tag_schema is not None and record.tag:
        current = _tag_names(record.classifications)
        removed = [t for t in _tag_names(record.previous_classifications) if t not in current]
        if column is not None:
            keyword = _column_parent_keyword(record.attributes)
            target = f"ALTER {keyword} {relation} MODIFY COLUMN {quote_identifier(column)}"
        else:
            target = f"ALTER {RELATION_KEYWORDS[record.type_name]} {relation}"
        tag_sql = _tag_sql(options.tag_schema)
        if current:
            pairs = ", ".join(f"{tag_sql(t)} = {lit(TAG_VALUE)}" for t in current)
            statements.append(f"{target} SET TAG {pairs}")
        if removed:
            statements.append(f"{target} UNSET TAG {', '.join(tag_sql(t) for t in removed)}")
    return statements


def _tag_names(classifications: Iterable[str]) -> list[str]:
    names = (tag_name(c) for c in sorted(classifications) if isinstance(c, str))
    return list(dict.fromkeys(n for n in names if n))


def _tag_sql(tag_schema: tuple[str, str]) -> Callable[[str], str]:
    prefix = ".".join(quote_identifier(p) for p in tag_schema)
    return lambda tag: f"{prefix}.{quote_identifier(tag)}"


def render_statements(changes: pl.DataFrame, options: SnowflakeOptions) -> list[str]:
    """The SQL statements bringing the warehouse's comments and tags in line with a batch of
    hub changes (CHANGE_SCHEMA). Only Snowflake tables, views and columns are rendered;
    archived records are left alone (the object is usually gone). With `create_tags`, the
    tags used are created first (`CREATE TAG IF NOT EXISTS`)."""
    statements: list[str] = []
    tags_used: list[str] = []
    for record in _records(changes, options.scope):
        if record.archived:
            continue
        try:
            statements += _record_statements(record, options)
        except ValueError as exc:  # an unusable identifier: nothing sensible to address
            logger.warning("snowflake target: %s skipped: %s", record.name, exc)
            continue
        if record.tag:
            tags_used += _tag_names(record.classifications)
    if options.create_tags and options.tags and options.tag_schema is not None and tags_used:
        tag_sql = _tag_sql(options.tag_schema)
        creates = [f"CREATE TAG IF NOT EXISTS {tag_sql(t)}" for t in dict.fromkeys(tags_used)]
        statements = creates + statements
    return statements


# ---------------------------------------------------------------------------------------
# Execution
# ---------------------------------------------------------------------------------------

# timeout (s) -> an open DB-API 2.0 connection.
ConnectionFactory = Callable[[float], Any]

_UNAVAILABLE = {"OperationalError", "InterfaceError"}
_REJECTED = {"ProgrammingError", "DataError", "IntegrityError", "NotSupportedError"}


def _kinds(exc: BaseException) -> set[str]:
    # By DB-API class name: every driver (snowflake.connector, duckdb) has its own classes.
    return {k.__name__ for k in type(exc).__mro__}


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def execute_statements(
    statements: list[str],
    connect: ConnectionFactory,
    timeout_s: float,
    *,
    transactional: bool,
) -> None:
    """Run the statements in order, in one transaction when `transactional` (DuckDB; in
    Snowflake every DDL statement commits on its own, and a batch delivered again simply
    writes the same comments and tags again).

    Failing to connect, or an operational failure, raises TargetUnavailableError (retried);
    a statement the engine refuses raises TargetRejectedError naming it (dead-lettered)."""
    if not statements:
        return
    try:
        connection = connect(timeout_s)
    except Exception as exc:
        raise TargetUnavailableError(f"cannot connect: {_first_line(exc)}") from exc
    # Transaction control as SQL on the cursor: a DuckDB cursor is a connection of its own,
    # whose transaction `connection.commit()` would not end.
    begin, commit = (["BEGIN TRANSACTION"], ["COMMIT"]) if transactional else ([], [])
    try:
        cursor = connection.cursor()
        for statement in begin + statements + commit:
            try:
                cursor.execute(statement)
            except Exception as exc:
                kinds = _kinds(exc)
                if not kinds & (_UNAVAILABLE | _REJECTED | {"DatabaseError", "Error"}):
                    raise  # not the engine's answer: a bug, shown as it is
                _rollback(cursor, transactional)
                if kinds & _REJECTED and not kinds & _UNAVAILABLE:
                    raise TargetRejectedError(f"refused {statement}: {_first_line(exc)}") from exc
                raise TargetUnavailableError(f"failed {statement}: {_first_line(exc)}") from exc
    finally:
        try:
            connection.close()
        except Exception:  # closing a broken connection: nothing more to learn
            logger.debug("snowflake target: closing the connection failed", exc_info=True)


def _rollback(cursor: Any, transactional: bool) -> None:
    if not transactional:
        return
    try:
        cursor.execute("ROLLBACK")
    except Exception:  # the failure that got us here is the one to report
        logger.debug("snowflake target: rollback failed", exc_info=True)


# ---------------------------------------------------------------------------------------
# Connections and the target
# ---------------------------------------------------------------------------------------

# Parameters of snowflake.connector.connect: these may be given as they are, or through
# `<param>_env` (the name of the environment variable holding the value) ...
SNOWFLAKE_PARAMS = (
    "account",
    "user",
    "role",
    "warehouse",
    "authenticator",
    "host",
    "private_key_file",
)
# ... and secrets only through `<param>_env` (`secret_env` stands for `password_env`).
SNOWFLAKE_SECRETS = ("password", "private_key_file_pwd", "token")


def _secret_name(param: str) -> Any:
    return Field(None, description=f"Name of the variable holding `{param}`.")


class SnowflakeTargetOptions(PluginOptions):
    """The snowflake target's options (beside the common ones of every target)."""

    connection: Literal["snowflake", "duckdb"] = Field(
        "snowflake", description="Where the statements run: Snowflake, or a DuckDB file (tests)."
    )
    descriptions: bool = Field(True, description="Write descriptions as comments.")
    tags: bool = Field(True, description="Write classifications as Snowflake tags.")
    tag_schema: str | None = Field(None, description="`DB.SCHEMA` holding the tags (with tags).")
    create_tags: bool = Field(False, description="Create missing tags (else they are skipped).")
    scope: Scope = Field(default_factory=list)
    database: str | None = Field(None, description="duckdb: the path of the DuckDB file.")
    account: str | None = Field(None, description="snowflake: the account identifier.")
    user: str | None = Field(None, description="snowflake: the user.")
    role: str | None = Field(None, description="snowflake: the role.")
    warehouse: str | None = Field(None, description="snowflake: the warehouse.")
    authenticator: str | None = Field(None, description="snowflake: the authenticator.")
    host: str | None = Field(None, description="snowflake: the host, if not the default.")
    private_key_file: str | None = Field(None, description="snowflake: key-pair auth file.")
    password: str | None = Field(None, description="Refused: a secret, give password_env.")
    private_key_file_pwd: str | None = Field(None, description="Refused: give its _env.")
    token: str | None = Field(None, description="Refused: a secret, give token_env.")
    account_env: str | None = _secret_name("account")
    user_env: str | None = _secret_name("user")
    role_env: str | None = _secret_name("role")
    warehouse_env: str | None = _secret_name("warehouse")
    authenticator_env: str | None = _secret_name("authenticator")
    host_env: str | None = _secret_name("host")
    private_key_file_env: str | None = _secret_name("private_key_file")
    password_env: str | None = _secret_name("password (or the target's secret_env)")
    private_key_file_pwd_env: str | None = _secret_name("private_key_file_pwd")
    token_env: str | None = _secret_name("token")

    @model_validator(mode="after")
    def _one_connection(self) -> SnowflakeTargetOptions:
        """A Snowflake parameter with connection: duckdb (or database with snowflake) is
        a mistake, not something to ignore."""
        given = self.model_fields_set - {"connection"} - set(_COMMON_OPTIONS)
        allowed = {"database"} if self.connection == "duckdb" else given - {"database"}
        unknown = sorted(given - allowed)
        if unknown:
            raise ValueError(f"unknown settings {unknown} with connection: {self.connection}")
        for param in SNOWFLAKE_SECRETS:
            if getattr(self, param) is not None:
                raise ValueError(f"{param} is a secret: give {param}_env, the variable's name")
        return self


_COMMON_OPTIONS = ("descriptions", "tags", "tag_schema", "create_tags", "scope")


def _snowflake_connect(env_names: dict[str, str], plain: dict[str, str]) -> ConnectionFactory:
    """A factory for `snowflake.connector.connect`; secrets are read from the environment
    at each connection (rotated secrets are picked up without a restart)."""

    def connect(timeout_s: float) -> Any:
        import snowflake.connector  # lazy: the package is needed only with this connection

        params: dict[str, Any] = dict(plain)
        for param, variable in env_names.items():
            params[param] = env_secret(variable, param)
        return snowflake.connector.connect(
            **params,
            login_timeout=timeout_s,
            network_timeout=timeout_s,
            session_parameters={"QUERY_TAG": "lily"},
        )

    return connect


def _snowflake_connection(
    config: TargetConfig, options: SnowflakeTargetOptions
) -> ConnectionFactory:
    try:
        import snowflake.connector  # noqa: F401
    except ImportError:
        raise ConfigError(
            "connection: snowflake needs the snowflake-connector-python package "
            "(pip install snowflake-connector-python)"
        ) from None
    env_names: dict[str, str] = {}
    plain: dict[str, str] = {}
    for param in SNOWFLAKE_PARAMS + SNOWFLAKE_SECRETS:
        variable = getattr(options, f"{param}_env")
        if param == "password" and variable is None:
            variable = config.secret_env
        if variable is not None:
            env_names[param] = str(variable)
        if param in SNOWFLAKE_PARAMS and getattr(options, param) is not None:
            plain[param] = str(getattr(options, param))
    for param, variable in env_names.items():
        env_secret(variable, f"{param}_env")
    given = set(env_names) | set(plain)
    missing = [p for p in ("account", "user") if p not in given]
    if missing:
        raise ConfigError(f"connection: snowflake needs {' and '.join(missing)} (or *_env)")
    if not given & {"password", "private_key_file", "token", "authenticator"}:
        raise ConfigError(
            "connection: snowflake needs password_env (or secret_env), private_key_file, "
            "token_env or authenticator"
        )
    return _snowflake_connect(env_names, plain)


def _duckdb_connection(options: SnowflakeTargetOptions) -> ConnectionFactory:
    database = options.database
    if not database:
        raise ConfigError("connection: duckdb needs database (the path of a DuckDB file)")
    path = Path(database).expanduser()
    if not path.is_file():
        raise ConfigError(f"database {path}: no such file")

    def connect(timeout_s: float) -> Any:
        import duckdb

        return duckdb.connect(str(path))

    return connect


@dataclass(frozen=True)
class SnowflakeSettings:
    options: SnowflakeOptions
    connect: ConnectionFactory
    transactional: bool


@register_target("snowflake")
class SnowflakeTarget:
    """Hub descriptions as Snowflake comments, classifications as Snowflake tags.

    options: connection (snowflake | duckdb), descriptions (default true), tags (default
    true), tag_schema (`DB.SCHEMA` holding the tags; needed with tags), create_tags
    (default false), scope (qualified-name prefixes; default every Snowflake name);
    with snowflake: account, user, role, warehouse, authenticator, host, private_key_file
    (each also as `<name>_env`), password_env (or secret_env), private_key_file_pwd_env,
    token_env; with duckdb: database (a DuckDB file; its name is the catalog, e.g.
    `ANALYTICS.duckdb` for `ANALYTICS.<schema>.<table>`) and tags: false.
    """

    name = "snowflake"

    Options = SnowflakeTargetOptions

    def configure(self, config: TargetConfig) -> SnowflakeSettings:
        options = parse_options(SnowflakeTargetOptions, config.model_extra)
        duckdb = options.connection == "duckdb"
        # The connection first: without one nothing else matters.
        connect = _duckdb_connection(options) if duckdb else _snowflake_connection(config, options)
        tag_schema: tuple[str, str] | None = None
        if options.tags:
            if duckdb:
                raise ConfigError("DuckDB has no tags: set tags: false with connection: duckdb")
            tag_schema = _tag_schema(options.tag_schema)
        parsed = SnowflakeOptions(
            dialect=options.connection,
            descriptions=options.descriptions,
            tags=options.tags,
            tag_schema=tag_schema,
            create_tags=options.create_tags,
            scope=tuple(options.scope),
        )
        # DuckDB runs a batch in one transaction; Snowflake commits each DDL statement itself.
        return SnowflakeSettings(parsed, connect, transactional=duckdb)

    def deliver(
        self, changes: pl.DataFrame, config: SnowflakeSettings, ctx: DeliveryContext
    ) -> None:
        statements = render_statements(changes, config.options)
        execute_statements(
            statements, config.connect, ctx.timeout_s, transactional=config.transactional
        )
        logger.info(
            "snowflake target %s (tenant %s): %d changes, %d statements executed",
            ctx.target,
            ctx.tenant,
            changes.height,
            len(statements),
        )


def _tag_schema(raw: str | None) -> tuple[str, str]:
    parts = raw.split(".") if raw else []
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise ConfigError(
            f"tag_schema must be DATABASE.SCHEMA (where the tags live), got {raw!r}; "
            "or set tags: false"
        )
    return parts[0].strip(), parts[1].strip()
