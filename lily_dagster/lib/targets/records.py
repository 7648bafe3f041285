"""What the warehouse targets (Snowflake, dbt) share: the shape of SQL objects' qualified
names, and how a hub record reads (its description, its attributes, its scope)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, Field

# Hub types that are relations (tables and the like), with their Snowflake object keyword.
RELATION_KEYWORDS: dict[str, str] = {
    "Table": "TABLE",
    "View": "VIEW",
    "MaterialisedView": "MATERIALIZED VIEW",  # Atlan's spelling
    "MaterializedView": "MATERIALIZED VIEW",
}
COLUMN_TYPE = "Column"


@dataclass(frozen=True)
class QualifiedName:
    """A SQL object's Atlan-style qualified name, split:
    `default/<connector>/<epoch>/<DB>/<SCHEMA>/<TABLE>[/<COLUMN>]`."""

    connection: str  # default/<connector>/<epoch>
    connector: str
    database: str
    schema: str
    table: str
    column: str | None = None

    @property
    def relation(self) -> str:
        """The qualified name of the table (or view) itself."""
        return f"{self.connection}/{self.database}/{self.schema}/{self.table}"


def split_qualified_name(qualified_name: str, *, column: bool) -> QualifiedName | None:
    """The parts of a table's (`column=False`) or column's qualified name; None when the name
    does not have that shape. Names holding `/` cannot be split unambiguously: a part count
    that does not fit the type is refused rather than guessed."""
    parts = qualified_name.split("/")
    if len(parts) != (7 if column else 6) or not all(parts):
        return None
    return QualifiedName(
        connection="/".join(parts[:3]),
        connector=parts[1],
        database=parts[3],
        schema=parts[4],
        table=parts[5],
        column=parts[6] if column else None,
    )


def json_object(raw: str | None) -> dict[str, Any]:
    """A JSON object column value (attributes, before) as a dict; anything else as {}."""
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def record_description(attributes: Mapping[str, Any]) -> str | None:
    """The description people see: Atlan shows `user_description` over the crawled
    `description` when both are set."""
    for key in ("user_description", "description"):
        value = attributes.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None


def touches(changed: Iterable[str], word: str) -> bool:
    """Whether a change may have changed a field named like `word` (description,
    classification): the change log names the fields that changed (`attributes` for the
    free-form ones). No field list (a creation) counts as touching everything: rendering
    more is safe, every write is idempotent."""
    names = [c.lower() for c in changed]
    return not names or any(word in n or n == "attributes" for n in names)


def in_scope(qualified_name: str, scope: tuple[str, ...]) -> bool:
    """Whether a qualified name is under one of the scope prefixes (no scope: every name)."""
    return not scope or any(
        qualified_name == p or qualified_name.startswith(p + "/") for p in scope
    )


def _prefixes(value: list[str]) -> tuple[str, ...]:
    prefixes = [p.rstrip("/") for p in value]
    if not all(prefixes):
        raise ValueError("scope must not contain empty prefixes")
    return tuple(prefixes)


# The `scope` option of a target: qualified-name prefixes it acts on (a connection, a schema).
Scope = Annotated[
    list[str],
    AfterValidator(_prefixes),
    Field(description="Qualified-name prefixes the target acts on (default: every record)."),
]
