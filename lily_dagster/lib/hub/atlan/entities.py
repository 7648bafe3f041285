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


def entity_json(
    records: pl.DataFrame, guids: pl.Series, types: pl.DataFrame, tag_ids: dict[str, str]
) -> pl.DataFrame:
    """One Atlas entity JSON per record (RECORD_SCHEMA rows, ACTIVE), with its temporary
    guid; `types` (qualified_name, type_name) gives the types of parents and lineage ends;
    `tag_ids` maps Atlan tag display names to their ids (tags without one are left out).
    Returns columns `entity` (JSON) and `skipped_tags` (count per row)."""
    qn, type_name = pl.col("qualified_name"), pl.col("type_name")
    # The name's parts as columns (__p0…): far faster in polars than list slicing.
    n = pl.col("__n")
    depth = type_name.replace_strict(SQL_DEPTH, default=None, return_dtype=pl.Int64)
    sql = qn.str.starts_with("default/") & (n == depth)

    def prefix(k: int) -> pl.Expr:
        return pl.concat_str([pl.col(f"__p{i}") for i in range(k)], separator="/")

    def part(i: int) -> pl.Expr:
        return pl.col(f"__p{i}")

    has_conn = qn.str.starts_with("default/") & (n >= 3)
    derived = [
        pl.when(has_conn).then(part(1)).alias("connectorName"),
        pl.when(has_conn).then(prefix(3)).alias("connectionQualifiedName"),
        pl.when(sql & (depth >= 5)).then(part(3)).alias("databaseName"),
        pl.when(sql & (depth >= 5)).then(prefix(4)).alias("databaseQualifiedName"),
        pl.when(sql & (depth >= 6)).then(part(4)).alias("schemaName"),
        pl.when(sql & (depth >= 6)).then(prefix(5)).alias("schemaQualifiedName"),
    ]
    parent = pl.col("parent_qualified_name")
    parent_type = pl.col("__parent_type")
    is_column = sql & (type_name == "Column")
    column_parent = {"table": ~parent_type.is_in(list(COLUMN_PARENT_ATTRIBUTE))}
    column_parent.update({a: parent_type == t for t, a in COLUMN_PARENT_ATTRIBUTE.items()})
    for attr, when in column_parent.items():
        derived += [
            pl.when(is_column & when).then(part(5)).alias(f"{attr}Name"),
            pl.when(is_column & when).then(prefix(6)).alias(f"{attr}QualifiedName"),
        ]
    relations = [
        pl.when(is_column & parent.is_not_null() & when)
        .then(_ref(parent_type.fill_null("Table"), parent))
        .alias(attr)
        for attr, when in column_parent.items()
    ]
    relations += [
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
    is_lineage = type_name.is_in(LINEAGE_TYPES)
    lineage = [pl.when(is_lineage).then(pl.col(f"__{c}")).alias(c) for c in ("inputs", "outputs")]
    core = [
        qn.alias("qualifiedName"),
        pl.col("name"),
        pl.col("description"),
        pl.col("owner_users").alias("ownerUsers"),
        pl.col("owner_groups").alias("ownerGroups"),
        pl.col("certificate_status").alias("certificateStatus"),
    ]
    extras = inner(
        pl.col("attributes")
        .fill_null("{}")
        .str.replace_many(
            [f'"{k}":' for k in ATTRIBUTE_NAMES], [f'"{v}":' for v in ATTRIBUTE_NAMES.values()]
        )
    )
    tag_names, tag_values = list(tag_ids), list(tag_ids.values())
    tag_id = (
        pl.element().replace_strict(tag_names, tag_values, default=None, return_dtype=pl.String)
        if tag_ids
        else pl.element().cast(pl.String).replace_strict([], [], default=None)
    )
    parent_types = types.rename({"qualified_name": "parent_qualified_name"})
    frame = (
        records.with_columns(
            qn.str.count_matches("/", literal=True).add(1).alias("__n"),
            qn.str.split_exact("/", max(SQL_DEPTH.values()) - 1)
            .struct.rename_fields([f"__p{i}" for i in range(max(SQL_DEPTH.values()))])
            .alias("__parts"),
            guids.alias("__guid"),
            _refs(records, "inputs", types).alias("__inputs"),
            _refs(records, "outputs", types).alias("__outputs"),
        )
        .join(
            parent_types.rename({"type_name": "__parent_type"}),
            on="parent_qualified_name",
            how="left",
            maintain_order="left",
        )
        .with_columns(
            pl.col("classifications")
            .fill_null([])
            .list.eval(tag_id)
            .list.drop_nulls()
            .alias("__tags")
        )
        .unnest("__parts")
    )
    # Names and parents are shared by siblings (a table's columns): computed once per
    # distinct (type, parent, directory of the name) and joined back.
    frame = on_distinct(
        frame,
        [
            type_name,
            pl.col("__n"),
            qn.str.replace(r"/[^/]*$", ""),
            parent,
            parent_type,
        ],
        {
            "__shared": pl.concat_str(
                [members(derived, keep_nulls=False), members(relations, keep_nulls=False)],
                separator=",",
                ignore_nulls=True,
            )
        },
    )
    attributes = pl.concat_str(
        [
            members(core, keep_nulls=True),
            pl.col("__shared"),
            pl.when(is_lineage).then(members(lineage, keep_nulls=False)),
            extras,
        ],
        separator=",",
        ignore_nulls=True,
    )
    tags = value(pl.col("__tags").list.eval(pl.struct(pl.element().alias("typeName"))))
    entity = pl.concat_str(
        [
            pl.lit('{"typeName":'),
            value(type_name),
            pl.lit(',"guid":"'),
            pl.col("__guid"),
            pl.lit('","status":"ACTIVE","attributes":{'),
            attributes,
            pl.lit('},"classifications":'),
            tags,
            pl.lit("}"),
        ]
    )
    return frame.select(
        entity.alias("entity"),
        (pl.col("classifications").list.len().fill_null(0) - pl.col("__tags").list.len()).alias(
            "skipped_tags"
        ),
    )


def bulk_bodies(entities: list[str], size: int) -> list[str]:
    """Request bodies for /api/meta/entity/bulk of at most `size` entities each."""
    return [
        '{"entities":[' + ",".join(entities[i : i + size]) + "]}"
        for i in range(0, len(entities), size)
    ]
