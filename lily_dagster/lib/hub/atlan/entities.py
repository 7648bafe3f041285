"""Atlas entity JSON for Atlan's bulk API, built from record frames in polars.

pyatlan's creators build ~1.4k objects/s; a backfill of millions cannot afford one Python
object per asset. These functions give the same attributes and qualified-name conventions
as `Table.creator`, `Column.creator`, `Process.creator` (a test compares them), as JSON
strings built column-wise, and the request bodies as string joins.
"""

from __future__ import annotations

import polars as pl

from lily_dagster.lib.enrichment import on_distinct
from lily_dagster.lib.json_exprs import inner, members, value

# How deep each SQL type's qualified name is: default/<connector>/<epoch>/<db>/<schema>/...
SQL_DEPTH = {
    "Database": 4,
    "Schema": 5,
    "Table": 6,
    "View": 6,
    "MaterialisedView": 6,
    "SnowflakeDynamicTable": 6,
    "Column": 7,
}
TABLE_LIKE = ("Table", "View", "MaterialisedView", "SnowflakeDynamicTable")
LINEAGE_TYPES = ("Process", "ColumnProcess")
# Relationship attribute to a column's parent, by the parent's type (as pyatlan sets it).
COLUMN_PARENT_ATTRIBUTE = {"View": "view", "MaterialisedView": "materialisedView"}
# Envelope attribute names (snake case, CONTRACT.md §1) as Atlan names them.
ATTRIBUTE_NAMES = {
    "data_type": "dataType",
    "is_nullable": "isNullable",
    "is_primary": "isPrimary",
    "max_length": "maxLength",
    "row_count": "rowCount",
    "column_count": "columnCount",
    "size_bytes": "sizeBytes",
    "source_url": "sourceURL",
    "user_description": "userDescription",
}


def _ref(type_name: pl.Expr, qualified_name: pl.Expr) -> pl.Expr:
    return pl.struct(
        type_name.alias("typeName"),
        pl.struct(qualified_name.alias("qualifiedName")).alias("uniqueAttributes"),
    )


def _refs(records: pl.DataFrame, column: str, types: pl.DataFrame) -> pl.Series:
    """Each row's list of qualified names in `column` as Atlas references (typeName from
    `types`, else Asset), in order; empty where the row has none."""
    rows = records.select(pl.int_range(pl.len()).alias("__row"), pl.col(column).alias("qn"))
    refs = (
        rows.explode("qn")
        .drop_nulls("qn")
        .join(types.rename({"qualified_name": "qn", "type_name": "t"}), on="qn", how="left")
        .with_columns(_ref(pl.col("t").fill_null("Asset"), pl.col("qn")).alias("ref"))
        .group_by("__row", maintain_order=True)
        .agg("ref")
    )
    joined = rows.select("__row").join(refs, on="__row", how="left", maintain_order="left")
    return joined.get_column("ref").alias(column)


def _part(i: int) -> pl.Expr:
    """Part i of the qualified name (the name's parts are columns __p0…: far faster in
    polars than list slicing)."""
    return pl.col(f"__p{i}")


def _prefix(k: int) -> pl.Expr:
    """The qualified name's first k parts."""
    return pl.concat_str([_part(i) for i in range(k)], separator="/")


def _sql_shape() -> tuple[pl.Expr, pl.Expr]:
    """(whether the name is a SQL object's of its type's depth, that depth)."""
    type_name = pl.col("type_name")
    depth = type_name.replace_strict(SQL_DEPTH, default=None, return_dtype=pl.Int64)
    sql = pl.col("qualified_name").str.starts_with("default/") & (pl.col("__n") == depth)
    return sql, depth


def _column_parents() -> tuple[pl.Expr, dict[str, pl.Expr]]:
    """(whether the record is a SQL column, its parent attribute → when it applies)."""
    sql, _depth = _sql_shape()
    parent_type = pl.col("__parent_type")
    column_parent = {"table": ~parent_type.is_in(list(COLUMN_PARENT_ATTRIBUTE))}
    column_parent.update({a: parent_type == t for t, a in COLUMN_PARENT_ATTRIBUTE.items()})
    return sql & (pl.col("type_name") == "Column"), column_parent


def _derived() -> list[pl.Expr]:
    """Names Atlan derives from the qualified name: connection, database, schema, table."""
    qn = pl.col("qualified_name")
    sql, depth = _sql_shape()
    has_conn = qn.str.starts_with("default/") & (pl.col("__n") >= 3)
    derived = [
        pl.when(has_conn).then(_part(1)).alias("connectorName"),
        pl.when(has_conn).then(_prefix(3)).alias("connectionQualifiedName"),
        pl.when(sql & (depth >= 5)).then(_part(3)).alias("databaseName"),
        pl.when(sql & (depth >= 5)).then(_prefix(4)).alias("databaseQualifiedName"),
        pl.when(sql & (depth >= 6)).then(_part(4)).alias("schemaName"),
        pl.when(sql & (depth >= 6)).then(_prefix(5)).alias("schemaQualifiedName"),
    ]
    is_column, column_parent = _column_parents()
    for attr, when in column_parent.items():
        derived += [
            pl.when(is_column & when).then(_part(5)).alias(f"{attr}Name"),
            pl.when(is_column & when).then(_prefix(6)).alias(f"{attr}QualifiedName"),
        ]
    return derived


def _relations() -> list[pl.Expr]:
    """References to the parent: a column's table, a table's schema, a schema's database."""
    type_name, parent = pl.col("type_name"), pl.col("parent_qualified_name")
    is_column, column_parent = _column_parents()
    relations = [
        pl.when(is_column & parent.is_not_null() & when)
        .then(_ref(pl.col("__parent_type").fill_null("Table"), parent))
        .alias(attr)
        for attr, when in column_parent.items()
    ]
    return [
        *relations,
        pl.when(type_name.is_in(TABLE_LIKE) & parent.is_not_null())
        .then(_ref(pl.lit("Schema"), parent))
        .alias("atlanSchema"),
        pl.when((type_name == "Schema") & parent.is_not_null())
        .then(_ref(pl.lit("Database"), parent))
        .alias("database"),
        # Column-level lineage hangs off its table-level process.
        pl.when((type_name == "ColumnProcess") & parent.is_not_null())
        .then(_ref(pl.lit("Process"), parent))
        .alias("process"),
    ]


def _core() -> list[pl.Expr]:
    return [
        pl.col("qualified_name").alias("qualifiedName"),
        pl.col("name"),
        pl.col("description"),
        pl.col("owner_users").alias("ownerUsers"),
        pl.col("owner_groups").alias("ownerGroups"),
        pl.col("certificate_status").alias("certificateStatus"),
    ]


def _extras() -> pl.Expr:
    """The free-form attributes' members, renamed to Atlan's names."""
    return inner(
        pl.col("attributes")
        .fill_null("{}")
        .str.replace_many(
            [f'"{k}":' for k in ATTRIBUTE_NAMES], [f'"{v}":' for v in ATTRIBUTE_NAMES.values()]
        )
    )


def _tag_id(tag_ids: dict[str, str]) -> pl.Expr:
    """A list element's Atlan tag id (null: no typedef for that tag)."""
    if not tag_ids:
        return pl.element().cast(pl.String).replace_strict([], [], default=None)
    names, ids = list(tag_ids), list(tag_ids.values())
    return pl.element().replace_strict(names, ids, default=None, return_dtype=pl.String)


def _prepared(
    records: pl.DataFrame, guids: pl.Series, types: pl.DataFrame, tag_ids: dict[str, str]
) -> pl.DataFrame:
    """The records with the working columns: name parts, guid, lineage ends, parent type,
    tag ids."""
    qn = pl.col("qualified_name")
    width = max(SQL_DEPTH.values())
    parent_types = types.rename(
        {"qualified_name": "parent_qualified_name", "type_name": "__parent_type"}
    )
    return (
        records.with_columns(
            qn.str.count_matches("/", literal=True).add(1).alias("__n"),
            qn.str.split_exact("/", width - 1)
            .struct.rename_fields([f"__p{i}" for i in range(width)])
            .alias("__parts"),
            guids.alias("__guid"),
            _refs(records, "inputs", types).alias("__inputs"),
            _refs(records, "outputs", types).alias("__outputs"),
        )
        .join(parent_types, on="parent_qualified_name", how="left", maintain_order="left")
        .with_columns(
            pl.col("classifications")
            .fill_null([])
            .list.eval(_tag_id(tag_ids))
            .list.drop_nulls()
            .alias("__tags")
        )
        .unnest("__parts")
    )


def _with_shared(frame: pl.DataFrame) -> pl.DataFrame:
    """`__shared`: the derived names and parent references. Siblings (a table's columns)
    share them: computed once per distinct (type, parent, directory of the name)."""
    keys = [
        pl.col("type_name"),
        pl.col("__n"),
        pl.col("qualified_name").str.replace(r"/[^/]*$", ""),
        pl.col("parent_qualified_name"),
        pl.col("__parent_type"),
    ]
    shared = pl.concat_str(
        [members(_derived(), keep_nulls=False), members(_relations(), keep_nulls=False)],
        separator=",",
        ignore_nulls=True,
    )
    return on_distinct(frame, keys, {"__shared": shared})


def entity_json(
    records: pl.DataFrame, guids: pl.Series, types: pl.DataFrame, tag_ids: dict[str, str]
) -> pl.DataFrame:
    """One Atlas entity JSON per record (RECORD_SCHEMA rows, ACTIVE), with its temporary
    guid; `types` (qualified_name, type_name) gives the types of parents and lineage ends;
    `tag_ids` maps Atlan tag display names to their ids (tags without one are left out).
    Returns columns `entity` (JSON) and `skipped_tags` (count per row)."""
    frame = _with_shared(_prepared(records, guids, types, tag_ids))
    is_lineage = pl.col("type_name").is_in(LINEAGE_TYPES)
    lineage = [pl.when(is_lineage).then(pl.col(f"__{c}")).alias(c) for c in ("inputs", "outputs")]
    attributes = pl.concat_str(
        [
            members(_core(), keep_nulls=True),
            pl.col("__shared"),
            pl.when(is_lineage).then(members(lineage, keep_nulls=False)),
            _extras(),
        ],
        separator=",",
        ignore_nulls=True,
    )
    tags = value(pl.col("__tags").list.eval(pl.struct(pl.element().alias("typeName"))))
    entity = pl.concat_str(
        [
            pl.lit('{"typeName":'),
            value(pl.col("type_name")),
            pl.lit(',"guid":"'),
            pl.col("__guid"),
            pl.lit('","status":"ACTIVE","attributes":{'),
            attributes,
            pl.lit('},"classifications":'),
            tags,
            pl.lit("}"),
        ]
    )
    skipped = pl.col("classifications").list.len().fill_null(0) - pl.col("__tags").list.len()
    return frame.select(entity.alias("entity"), skipped.alias("skipped_tags"))


def bulk_bodies(entities: list[str], size: int) -> list[str]:
    """Request bodies for /api/meta/entity/bulk of at most `size` entities each."""
    return [
        '{"entities":[' + ",".join(entities[i : i + size]) + "]}"
        for i in range(0, len(entities), size)
    ]
