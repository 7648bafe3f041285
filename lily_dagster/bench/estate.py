"""Synthetic estates for benchmarks: millions to billions of envelopes streamed to Parquet.

`write_estate` writes a Snowflake-like estate in the envelope format (CONTRACT.md §1) as
Parquet with the nested `asset` struct: databases, schemas, tables (row counts,
descriptions, owners, certificates), their columns (data type, order; about one in ten
named like personal data: EMAIL, PHONE, …), views, and lineage `Process` records whose
inputs and outputs are tables of the same schema.

Qualified names are `default/snowflake/<epoch>/<DB>/<SCHEMA>/<TABLE>[/<COLUMN>]` (views like
tables, processes `default/snowflake/<epoch>/<DB>-<SCHEMA>-load-<n>`). Records come in
hierarchy order: a database, then for each of its schemas the schema, each table followed
by its columns, the views, then the processes; so a parent always precedes its children and
a process its tables, in file order (files are `part-000000.parquet`, …).

Every schema has the same shape (drawn once from the seed); the values of each record
(owners, row counts, certificates, event ids and times) are a hash of the seed and the
record's position. The same arguments give the same files, and the estate is built column-
wise in batches, never held in memory as a whole.
"""

from __future__ import annotations

import random
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

SCHEMAS_PER_DATABASE = 10
TABLES_PER_SCHEMA = 40
VIEWS_PER_SCHEMA = 5
PROCESSES_PER_SCHEMA = 8
MIN_COLUMNS, MAX_COLUMNS = 4, 20
PII_SHARE = 0.1
BATCH_ROWS = 262_144  # rows built and written at a time (a Parquet row group)
EPOCH = 1_700_000_000
EVENT_TIME_BASE = datetime(2025, 1, 1, tzinfo=UTC)

KINDS = ("Database", "Schema", "Table", "Column", "View", "Process")
_DATABASE, _SCHEMA, _TABLE, _COLUMN, _VIEW, _PROCESS = range(len(KINDS))

SCHEMA_NAMES = (
    "RAW", "STAGING", "CORE", "MARTS", "FINANCE", "SALES", "MARKETING", "OPS", "HR", "ANALYTICS",
)  # fmt: skip
TABLE_NAMES = (
    "ORDERS", "CUSTOMERS", "PRODUCTS", "INVOICES", "PAYMENTS", "SHIPMENTS", "RETURNS",
    "SUPPLIERS", "INVENTORY", "WAREHOUSES", "EMPLOYEES", "DEPARTMENTS", "ACCOUNTS", "LEADS",
    "OPPORTUNITIES", "CAMPAIGNS", "SESSIONS", "EVENTS", "PAGEVIEWS", "SUBSCRIPTIONS", "PLANS",
    "REFUNDS", "DISCOUNTS", "CARTS", "REVIEWS", "TICKETS", "AGENTS", "CONTRACTS", "VENDORS",
    "BUDGETS", "FORECASTS", "LEDGER", "TRANSACTIONS", "CURRENCIES", "REGIONS", "STORES",
    "DEVICES", "USERS", "ADDRESSES", "NOTIFICATIONS",
)  # fmt: skip
COLUMN_TYPES = {
    "ID": "NUMBER(38,0)", "CREATED_AT": "TIMESTAMP_NTZ", "UPDATED_AT": "TIMESTAMP_NTZ",
    "STATUS": "VARCHAR(32)", "AMOUNT": "NUMBER(18,2)", "CURRENCY": "VARCHAR(3)",
    "QUANTITY": "NUMBER(10,0)", "PRICE": "NUMBER(18,2)", "DESCRIPTION": "VARCHAR",
    "CATEGORY": "VARCHAR(64)", "REGION_CODE": "VARCHAR(8)", "SOURCE_SYSTEM": "VARCHAR(32)",
    "IS_ACTIVE": "BOOLEAN", "IS_DELETED": "BOOLEAN", "VERSION": "NUMBER(10,0)",
    "EXTERNAL_REF": "VARCHAR(64)", "SKU": "VARCHAR(32)", "CHANNEL": "VARCHAR(32)",
    "SCORE": "FLOAT", "WEIGHT_KG": "FLOAT", "NOTES": "VARCHAR", "TAGS": "ARRAY",
    "PAYLOAD": "VARIANT", "LOADED_AT": "TIMESTAMP_LTZ", "BATCH_ID": "VARCHAR(36)",
    "PARTITION_DATE": "DATE", "OWNER_ID": "NUMBER(38,0)", "PARENT_ID": "NUMBER(38,0)",
    "START_DATE": "DATE", "END_DATE": "DATE", "DISCOUNT_PCT": "NUMBER(5,2)",
    "TAX_AMOUNT": "NUMBER(18,2)", "NET_AMOUNT": "NUMBER(18,2)", "LINE_NUMBER": "NUMBER(10,0)",
    "PRIORITY": "NUMBER(3,0)", "RATING": "NUMBER(3,1)", "URL": "VARCHAR(2048)",
    "LOCALE": "VARCHAR(16)", "TIMEZONE": "VARCHAR(64)", "CHECKSUM": "VARCHAR(64)",
}  # fmt: skip
PII_COLUMN_TYPES = {
    "EMAIL": "VARCHAR(320)", "PHONE": "VARCHAR(32)", "FIRST_NAME": "VARCHAR(128)",
    "LAST_NAME": "VARCHAR(128)", "SSN": "VARCHAR(11)", "DATE_OF_BIRTH": "DATE",
    "BILLING_ADDRESS": "VARCHAR(512)", "IP_ADDRESS": "VARCHAR(45)", "MOBILE": "VARCHAR(32)",
    "POSTCODE": "VARCHAR(16)", "CARD_NUMBER": "VARCHAR(19)", "FULL_NAME": "VARCHAR(256)",
}  # fmt: skip
OWNERS = ("jdoe", "asmith", "mlopez", "kchen", "rpatel", "oadeyemi", "lnguyen", "tmueller")
GROUPS = ("data-eng", "analytics", "finance-data", "platform")
CERTIFICATES = ("VERIFIED", "DRAFT", "DEPRECATED")

ATTRIBUTES = pl.Struct(
    {
        "description": pl.String,
        "owner_users": pl.List(pl.String),
        "owner_groups": pl.List(pl.String),
        "certificate_status": pl.String,
        "parent_qualified_name": pl.String,
        "row_count": pl.Int64,
        "data_type": pl.String,
        "order": pl.Int64,
    }
)
ESTATE_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.String(),
    "tenant": pl.String(),
    "source": pl.String(),
    "op": pl.String(),
    "event_time": pl.Datetime("us", "UTC"),
    "asset": pl.Struct(
        {
            "type_name": pl.String,
            "qualified_name": pl.String,
            "name": pl.String,
            "attributes": ATTRIBUTES,
            "classifications": pl.List(pl.String),
            "inputs": pl.List(pl.String),
            "outputs": pl.List(pl.String),
        }
    ),
}


@dataclass(frozen=True)
class EstateManifest:
    directory: Path
    tenant: str
    seed: int
    files: list[Path]
    rows: int
    counts: dict[str, int] = field(default_factory=dict)  # records by type_name


@dataclass(frozen=True)
class _Template:
    """The records of one schema, in order (the same shape in every schema): per slot its
    kind, type, name, the qualified name's and the parent's ends after the schema's name,
    the description's fixed part, a column's data type and order, a process's number."""

    frame: pl.DataFrame

    @property
    def height(self) -> int:
        return self.frame.height


def _template(seed: int) -> _Template:
    rng = random.Random(seed)
    normal, pii = list(COLUMN_TYPES), list(PII_COLUMN_TYPES)
    rows: list[dict[str, object]] = [{"kind": _SCHEMA, "suffix": ""}]
    for table in TABLE_NAMES[:TABLES_PER_SCHEMA]:
        rows.append(
            {
                "kind": _TABLE,
                "name": table,
                "suffix": f"/{table}",
                "parent": "",
                "text": f"{table.lower()} of ",
            }
        )
        count = rng.randint(MIN_COLUMNS, MAX_COLUMNS)
        personal = sum(rng.random() < PII_SHARE for _ in range(count))
        names = rng.sample(pii, personal) + rng.sample(normal, count - personal)
        rng.shuffle(names)
        names.remove("ID") if "ID" in names else names.pop()
        names.insert(0, "ID")  # every table has its key first
        for c, name in enumerate(names):
            rows.append(
                {
                    "kind": _COLUMN,
                    "name": name,
                    "suffix": f"/{table}/{name}",
                    "parent": f"/{table}",
                    "data_type": COLUMN_TYPES.get(name) or PII_COLUMN_TYPES[name],
                    "order": c + 1,
                    "text": f"{name.lower().replace('_', ' ')} of {table.lower()}",
                }
            )
    for v in range(VIEWS_PER_SCHEMA):
        view = f"V_{TABLE_NAMES[v]}"
        rows.append(
            {
                "kind": _VIEW,
                "name": view,
                "suffix": f"/{view}",
                "parent": "",
                "text": f"Reporting view over {TABLE_NAMES[v]}",
            }
        )
    for n in range(PROCESSES_PER_SCHEMA):
        rows.append({"kind": _PROCESS, "suffix": f"load-{n}", "process": n, "text": "Nightly load"})
    schema = {
        "kind": pl.Int8, "name": pl.String, "suffix": pl.String, "parent": pl.String,
        "text": pl.String, "data_type": pl.String, "order": pl.Int64, "process": pl.Int64,
    }  # fmt: skip
    frame = pl.DataFrame(rows, schema=schema).with_columns(
        pl.col("kind").replace_strict(list(range(len(KINDS))), list(KINDS)).alias("type_name")
    )
    return _Template(frame)


# Process n of a schema loads table 2n+1 from table 2n (and from 2n+2, every third one).
_PROCESS_ENDS = pl.DataFrame(
    {
        "input": [f"/{TABLE_NAMES[2 * n]}" for n in range(PROCESSES_PER_SCHEMA)],
        "second_input": [
            f"/{TABLE_NAMES[2 * n + 2]}" if n % 3 == 0 else None
            for n in range(PROCESSES_PER_SCHEMA)
        ],
        "output": [f"/{TABLE_NAMES[2 * n + 1]}" for n in range(PROCESSES_PER_SCHEMA)],
    }
)


def _mix(values: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64 of each position and the seed: per-record values that do not depend on how
    the estate is cut into batches or files."""
    with np.errstate(over="ignore"):
        z = values.astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


_OWNER_LISTS = pl.Series(
    [[OWNERS[i % len(OWNERS)]] if i < len(OWNERS) else
     [OWNERS[i % len(OWNERS)], OWNERS[(i * 3 + 1) % len(OWNERS)]] for i in range(2 * len(OWNERS))],
    dtype=pl.List(pl.String),
)  # fmt: skip
_GROUP_LISTS = pl.Series([[g] for g in GROUPS], dtype=pl.List(pl.String))
_CERTIFICATES = pl.Series([*CERTIFICATES, None], dtype=pl.String)


def _where(index: np.ndarray, keep: np.ndarray) -> pl.Series:
    """Indices to gather by, null (a null value) where `keep` is false."""
    return pl.Series(index).set(pl.Series(~keep), None)


def _batch(start: int, stop: int, template: _Template, tenant: str, seed: int) -> pl.DataFrame:
    """Records [start, stop) of the estate, built column-wise: what varies by database and
    schema is built once per schema of the batch, what varies by slot comes from the
    template, what varies by record is gathered from small tables by its hash."""
    per_database = 1 + SCHEMAS_PER_DATABASE * template.height
    position = np.arange(start, stop, dtype=np.int64)
    database = position // per_database
    within = position % per_database
    is_database = within == 0
    slot = np.where(is_database, 0, (within - 1) % template.height)
    schema_key = database * SCHEMAS_PER_DATABASE + np.where(
        is_database, 0, (within - 1) // template.height
    )
    first_key = int(schema_key[0])
    h = _mix(position, seed)

    # The schemas of this batch (a few hundred at most): names and qualified names.
    connection = f"default/snowflake/{EPOCH + seed}"
    schemas: dict[str, list[object]] = {
        k: []
        for k in ("db_name", "db_qn", "db_text", "schema_name", "schema_qn", "schema_text",
                  "label", "process_prefix")
    }  # fmt: skip
    for key in range(first_key, int(schema_key[-1]) + 1):
        db, sc = divmod(key, SCHEMAS_PER_DATABASE)
        db_name, schema_name = f"DB_{db:06d}", SCHEMA_NAMES[sc]
        db_qn = f"{connection}/{db_name}"
        schema_qn = f"{db_qn}/{schema_name}"
        values = (
            db_name, db_qn, f"Database {db_name} of the warehouse", schema_name, schema_qn,
            f"{schema_name} layer of {db_name}", f"{db_name}.{schema_name}",
            f"{connection}/{db_name}-{schema_name}-",
        )  # fmt: skip
        for column, value in zip(schemas, values, strict=True):
            schemas[column].append(value)
    per_schema = pl.DataFrame(schemas, schema=dict.fromkeys(schemas, pl.String))
    own = per_schema[schema_key - first_key]
    shape = template.frame[slot]
    kinds = np.where(is_database, _DATABASE, shape.get_column("kind").to_numpy())
    kind = pl.Series("kind", kinds, pl.Int8)
    k = pl.col("kind")

    process = (schema_key - first_key) * PROCESSES_PER_SCHEMA
    process += shape.get_column("process").fill_null(0).to_numpy()
    qn = pl.col("schema_qn")
    ends = (
        per_schema.select("schema_qn")
        .join(_PROCESS_ENDS, how="cross", maintain_order="left")
        .select(
            pl.concat_list(qn + pl.col("input"), qn + pl.col("second_input"))
            .list.drop_nulls()
            .alias("inputs"),
            pl.concat_list(qn + pl.col("output")).alias("outputs"),
        )
    )
    is_process = kinds == _PROCESS
    inputs = ends.get_column("inputs").gather(_where(process, is_process))
    outputs = ends.get_column("outputs").gather(_where(process, is_process))

    h1 = (h % np.uint64(1 << 20)).astype(np.int64)
    h2 = ((h >> np.uint64(20)) % np.uint64(1 << 20)).astype(np.int64)
    h3 = (h >> np.uint64(40)).astype(np.int64)
    is_table = kinds == _TABLE
    owners = _OWNER_LISTS.gather(_where(h1 % _OWNER_LISTS.len(), is_table | is_database))
    groups = _GROUP_LISTS.gather(_where(h3 % len(GROUPS), is_table))
    certificate = _CERTIFICATES.gather(_where(h2 % 4, is_table | (kinds == _VIEW)))

    frame = pl.concat([own, shape.drop("kind")], how="horizontal").with_columns(
        kind,
        pl.Series("position", position),
        pl.Series("h2", h2),
        pl.Series("row_count", np.where(is_table, h3 % 50_000_000, 0)),
        owners.alias("owners"),
        groups.alias("groups"),
        certificate.alias("certificate"),
        inputs.alias("inputs"),
        outputs.alias("outputs"),
        pl.Series("event_us", int(EVENT_TIME_BASE.timestamp() * 1_000_000) + position * 1_000 + h1),
    )
    prefix = (
        pl.when(k == _DATABASE).then(pl.col("db_qn"))
        .when(k == _PROCESS).then(pl.col("process_prefix"))
        .otherwise(pl.col("schema_qn"))
    )  # fmt: skip
    parent = (
        pl.when(k == _SCHEMA).then(pl.col("db_qn"))
        .when(pl.col("parent").is_not_null())
        .then(pl.concat_str([pl.col("schema_qn"), pl.col("parent")]))
    )  # fmt: skip
    name = (
        pl.when(k == _DATABASE).then(pl.col("db_name"))
        .when(k == _SCHEMA).then(pl.col("schema_name"))
        .when(k == _PROCESS).then(pl.concat_str([pl.col("label"), pl.lit(" load "),
                                                  pl.col("process").cast(pl.String)]))
        .otherwise(pl.col("name"))
    )  # fmt: skip
    description = (
        pl.when(k == _DATABASE).then(pl.col("db_text"))
        .when(k == _SCHEMA).then(pl.col("schema_text"))
        .when(k == _TABLE).then(pl.concat_str([pl.col("text"), pl.col("label")]))
        .when((k == _COLUMN) & (pl.col("h2") % 2 == 1)).then(None)
        .otherwise(pl.col("text"))
    )  # fmt: skip
    attributes = pl.struct(
        description.alias("description"),
        pl.col("owners").alias("owner_users"),
        pl.col("groups").alias("owner_groups"),
        pl.col("certificate").alias("certificate_status"),
        parent.alias("parent_qualified_name"),
        pl.when(k == _TABLE).then(pl.col("row_count")).alias("row_count"),
        pl.col("data_type"),
        pl.col("order"),
    )
    asset = pl.struct(
        pl.when(k == _DATABASE)
        .then(pl.lit("Database"))
        .otherwise(pl.col("type_name"))
        .alias("type_name"),
        pl.concat_str([prefix, pl.col("suffix")]).alias("qualified_name"),
        name.alias("name"),
        attributes.alias("attributes"),
        pl.lit(None, dtype=pl.List(pl.String)).alias("classifications"),
        pl.col("inputs"),
        pl.col("outputs"),
    )
    return frame.select(
        pl.concat_str(
            [pl.lit(f"est{seed}-"), pl.col("position").cast(pl.String).str.zfill(12)]
        ).alias("event_id"),
        pl.lit(tenant).alias("tenant"),
        pl.lit("snowflake").alias("source"),
        pl.lit("upsert").alias("op"),
        pl.col("event_us").cast(pl.Datetime("us", "UTC")).alias("event_time"),
        asset.alias("asset"),
    ).cast(ESTATE_SCHEMA)  # type: ignore[arg-type]


def write_estate(
    directory: Path,
    assets: int,
    tenant: str,
    rows_per_file: int = 1_000_000,
    seed: int = 0,
) -> EstateManifest:
    """Write an estate of `assets` records for `tenant` under `directory` (created), in
    Parquet files of at most `rows_per_file` rows. Deterministic for the arguments."""
    import pyarrow.parquet as pq

    if assets < 0:
        raise ValueError(f"assets must not be negative, got {assets}")
    if rows_per_file < 1:
        raise ValueError(f"rows_per_file must be at least 1, got {rows_per_file}")
    directory.mkdir(parents=True, exist_ok=True)
    template = _template(seed)
    counts = np.zeros(len(KINDS), dtype=np.int64)
    files: list[Path] = []
    # One writer thread: batch n+1 is built while batch n is encoded and written (both
    # release the GIL); at most one batch waits, so memory stays at two batches.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="estate-writer") as pool:
        pending: Future[None] | None = None
        for number, file_start in enumerate(range(0, assets, rows_per_file)):
            file_stop = min(file_start + rows_per_file, assets)
            path = directory / f"part-{number:06d}.parquet"
            writer = None
            for start in range(file_start, file_stop, BATCH_ROWS):
                batch = _batch(start, min(start + BATCH_ROWS, file_stop), template, tenant, seed)
                kinds = batch.get_column("asset").struct.field("type_name").value_counts()
                for kind, n in kinds.iter_rows():
                    counts[KINDS.index(kind)] += n
                table = batch.to_arrow()
                if writer is None:
                    writer = pq.ParquetWriter(
                        path, table.schema, compression="zstd", write_statistics=False
                    )
                if pending is not None:
                    pending.result()
                pending = pool.submit(writer.write_table, table)
            if writer is not None:
                if pending is not None:
                    pending.result()
                pending = pool.submit(writer.close)
            files.append(path)
        if pending is not None:
            pending.result()
    return EstateManifest(
        directory=directory,
        tenant=tenant,
        seed=seed,
        files=files,
        rows=assets,
        counts={kind: int(n) for kind, n in zip(KINDS, counts, strict=True) if n},
    )
