"""Lily's configuration: environment variables (CONTRACT.md §3) and the LILY_CONFIG YAML file.

Every environment variable Lily reads is read here: `Settings.from_env()` (resolved once per
process and environment: later calls return the same object until a variable or the
LILY_CONFIG file changes), and `env_secret` for the variables a configuration names as
holding a secret. Every problem is raised as `ConfigError` with a one-line message, so the
CLI and Dagster both report bad configuration at start rather than deep inside a run.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from lily_dagster.lib.access.policy import AccessConfig, AccessPolicy

TENANT_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
TENANT_RE = re.compile(TENANT_PATTERN)


def is_tenant(value: str) -> bool:
    # fullmatch: `$` alone would also accept a trailing newline
    return TENANT_RE.fullmatch(value) is not None


# Quarantine bucket for Kafka messages that name no valid tenant on an unbound topic.
UNROUTED_TENANT = "_unrouted"

DEFAULT_TOPIC = "lily.metadata.events"
EMBEDDED_BROKER_PORT = 19092
DEFAULT_MAX_EVENT_BYTES = 1_048_576
DEFAULT_MAX_BATCH_EVENTS = 50_000
# Tenants a tick's run takes at most (issue 18: ~0.2 s of a run's CPU per tenant).
DEFAULT_RUN_MAX_TENANTS = 50
DEFAULT_WEBHOOK_PORT = 8787
DEFAULT_WEBHOOK_MAX_BODY_BYTES = 5_242_880
DEFAULT_WEBHOOK_RATE_PER_S = 200.0
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# text: Python's and Dagster's own handlers; json: Lily's lines as JSON (lib/logs.py).
LOG_FORMATS = ("text", "json")
DEFAULT_RUN_RETENTION_DAYS = 7
DEFAULT_BACKFILL_SHARDS = 4
DEFAULT_BROKER_STORAGE = "memory://tansu/"


class ConfigError(ValueError):
    """Bad configuration; the message is one line, fit for a CLI error."""


def env_secret(name: str, what: str = "secret") -> str:
    """The value of the variable a configuration names as holding a secret (`secret_env`,
    `url_env`, `password_env`…), read when needed so rotated secrets are picked up."""
    value = os.environ.get(name, "").strip()
    if not value:
        raise ConfigError(f"{what} variable {name} is not set")
    return value


def jwt_environment() -> dict[str, str]:
    """The LILY_JWT_* variables (bearer-token verification), checked by the receiver's
    `auth_config_from_env` where tokens are verified or minted."""
    return {k: v for k, v in os.environ.items() if k.startswith("LILY_JWT_")}


class PluginConfig(BaseModel):
    """Configuration of one plug-in for one tenant: the keys beside the common ones are the
    plug-in's own options, validated against its `Options` model (lib/plugins.py)."""

    model_config = ConfigDict(extra="allow")


class VendorWebhookConfig(PluginConfig):
    """A vendor endpoint of one tenant; vendor-specific options are allowed beside secret_env."""

    # Name of the environment variable holding the signing secret (never the secret itself).
    secret_env: str

    def secret(self) -> str:
        return env_secret(self.secret_env, "webhook secret")


class PollerConfig(PluginConfig):
    """A polled source of one tenant; the other keys are the poller's own options (its
    `Options` model). Options ending in `_env` name environment variables holding secrets."""

    enabled: bool = True


class HookRef(BaseModel):
    """One hook in a chain: a name, or {name, settings, timeout_s}."""

    model_config = ConfigDict(extra="forbid")

    name: str
    settings: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float | None = Field(default=None, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class HooksConfig(BaseModel):
    """Hook chains by stage, in order; None: the default chain."""

    model_config = ConfigDict(extra="forbid")

    pre_ingest: list[HookRef] | None = None
    post_consume: list[HookRef] | None = None


class AccessRules(BaseModel):
    """Which changes a target may receive (ABAC on classification, type and tenant).
    Patterns are globs (fnmatch): `PII*`, `GDPR:*`."""

    model_config = ConfigDict(extra="forbid")

    # A public destination (e.g. a Slack channel anyone can join): personal data never
    # goes there, whatever else is configured.
    public: bool = False
    deny_classifications: list[str] = Field(default_factory=list)
    allow_types: list[str] = Field(default_factory=list)  # empty: every type
    deny_types: list[str] = Field(default_factory=list)


class TargetConfig(PluginConfig):
    """One outbound target (CONTRACT.md §5); type-specific options are allowed as extras."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    type: str
    tenants: list[str] | None = None  # None: every tenant
    url: str | None = None
    secret_env: str | None = None  # the NAME of the variable holding its secret
    access: AccessRules = Field(default_factory=AccessRules)
    batch_size: int = Field(default=100, ge=1, le=10_000)
    timeout_s: float = Field(default=10.0, gt=0, le=600)
    max_attempts: int = Field(default=5, ge=1, le=50)  # per batch, within one run
    backoff_s: float = Field(default=1.0, ge=0, le=300)
    hooks: list[HookRef] | None = None  # post-consume chain; None: the file's post_consume


DEFAULT_MAX_ARCHIVE_SHARE = 0.2
# s3://bucket/prefix, for LILY_INBOX and reconciliation sources.
_S3_URI = re.compile(r"s3://[a-z0-9][a-z0-9.-]{2,62}(/\S*)?")


class ReconciliationConfig(BaseModel):
    """Nightly reconciliation of one tenant's hub against a source snapshot (README:
    Reconciliation)."""

    model_config = ConfigDict(extra="forbid")

    # Envelope files (*.jsonl, *.ndjson, *.parquet): a local file or directory (relative
    # paths are read from the LILY_CONFIG file's directory), or s3://bucket/prefix.
    source: str
    # Where records missing from the snapshot are stale; empty: the connections
    # (default/<connector>/<epoch>) the snapshot names.
    scope_prefixes: list[str] = Field(default_factory=list)
    # Archive nothing when more than this share of the in-scope live records would go.
    max_archive_share: float = Field(default=DEFAULT_MAX_ARCHIVE_SHARE, gt=0, le=1)
    # Report the diff without changing the hub.
    dry_run: bool = False

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("source is empty: expected a path or s3://bucket/prefix")
        if "://" in value and not _S3_URI.fullmatch(value):
            raise ValueError(f"source {value!r}: expected a local path or s3://bucket/prefix")
        return value

    @field_validator("scope_prefixes")
    @classmethod
    def _prefixes(cls, value: list[str]) -> list[str]:
        prefixes = [p.strip().rstrip("/") for p in value]
        if not all(prefixes):
            raise ValueError("scope_prefixes must not contain empty prefixes")
        return prefixes


class TenantConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    # Topics bound to this tenant: every event on them must name this tenant.
    kafka_topics: list[str] = Field(default_factory=list)
    # Vendor webhooks accepted for this tenant, by vendor name (atlan, monte-carlo, ...).
    webhooks: dict[str, VendorWebhookConfig] = Field(default_factory=dict)
    # This tenant's hook chains; unset: the file's `hooks`, else the defaults.
    hooks: HooksConfig | None = None
    # Polled sources of this tenant, by poller name (monte-carlo, ...).
    pollers: dict[str, PollerConfig] = Field(default_factory=dict)
    # Requests per second the webhook receiver accepts for this tenant (429 beyond).
    webhook_rate_per_s: float | None = Field(default=None, gt=0)
    # Nightly reconciliation against a source snapshot; unset: not reconciled.
    reconciliation: ReconciliationConfig | None = None
    # Access policies for this tenant's records, besides the file's (CONTRACT.md §6).
    access: AccessConfig = Field(default_factory=AccessConfig)

    @field_validator("name")
    @classmethod
    def _tenant_name(cls, value: str) -> str:
        if not is_tenant(value):
            raise ValueError(f"tenant name {value!r} does not match {TENANT_PATTERN}")
        return value


class AlertsConfig(BaseModel):
    """`alerts:` of LILY_CONFIG: the alert sensor's thresholds and where it posts
    (docs/metrics.md, alerts inside Dagster)."""

    model_config = ConfigDict(extra="forbid")

    target: str = Field(description="the configured target (slack, teams or webhook) to post to")
    quarantine_share: float = Field(
        0.05, gt=0, le=1, description="alert when over this share of a tenant's landed events is "
        "quarantined within window_s"
    )  # fmt: skip
    kafka_lag: int = Field(10_000, ge=1, description="alert when a topic is this many behind")
    window_s: int = Field(900, ge=10, le=86_400, description="the quarantine share's window")
    cooldown_s: int = Field(
        3_600, ge=0, description="after an alert resolves, the same alert waits this long"
    )


class FreshnessConfig(BaseModel):
    """`freshness:` of LILY_CONFIG: how long a tenant's hub may go without a change before
    the `hub_records_freshness` check warns (docs/metrics.md, freshness checks)."""

    model_config = ConfigDict(extra="forbid")

    max_age_s: int = Field(
        default=86_400, ge=60, description="a tenant whose hub last changed longer ago is stale"
    )
    tenants: dict[str, Annotated[int, Field(ge=60)]] = Field(
        default_factory=dict, description="per-tenant max_age_s, overriding it"
    )

    def max_age_of(self, tenant: str) -> int:
        return self.tenants.get(tenant, self.max_age_s)


class LilyConfigFile(BaseModel):
    """The LILY_CONFIG YAML file (README: Configuration)."""

    model_config = ConfigDict(extra="forbid")

    tenants: list[TenantConfig] = Field(default_factory=list)
    # Hook chains for every tenant that does not configure its own.
    hooks: HooksConfig | None = None
    # Outbound targets (CONTRACT.md §5), each fed by the tenants it names.
    targets: list[TargetConfig] = Field(default_factory=list)
    # Access policies for every tenant's records (CONTRACT.md §6).
    access: AccessConfig = Field(default_factory=AccessConfig)
    # The alert sensor's thresholds and target (none: it posts nothing).
    alerts: AlertsConfig | None = None
    # The freshness check's thresholds (defaults: a day for every tenant).
    freshness: FreshnessConfig = Field(default_factory=FreshnessConfig)

    @field_validator("targets")
    @classmethod
    def _unique_target_names(cls, targets: list[TargetConfig]) -> list[TargetConfig]:
        names = [t.name for t in targets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"target names must be unique: {dupes}")
        return targets

    @model_validator(mode="after")
    def _alerts_target_is_configured(self) -> LilyConfigFile:
        names = [t.name for t in self.targets]
        if self.alerts is not None and self.alerts.target not in names:
            raise ValueError(
                f"alerts.target: no target named {self.alerts.target!r}; known: {names}"
            )
        return self

    def targets_of(self, tenant: str) -> list[TargetConfig]:
        return [t for t in self.targets if t.tenants is None or tenant in t.tenants]

    def tenant(self, name: str) -> TenantConfig | None:
        return next((t for t in self.tenants if t.name == name), None)

    def policies_of(self, tenant: str) -> tuple[AccessPolicy, ...]:
        """The access policies over a tenant's records: the file's, then the tenant's."""
        own = self.tenant(tenant)
        return self.access.policies + (own.access.policies if own else ())

    def topic_bindings(self) -> dict[str, str]:
        bindings: dict[str, str] = {}
        for tenant in self.tenants:
            for topic in tenant.kafka_topics:
                if topic in bindings and bindings[topic] != tenant.name:
                    raise ConfigError(
                        f"topic {topic!r} is bound to both {bindings[topic]!r} and {tenant.name!r}"
                    )
                bindings[topic] = tenant.name
        return bindings


def _env_int(
    env: Mapping[str, str], name: str, default: int, minimum: int = 1, maximum: int | None = None
) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}={value} must be at most {maximum}")
    return value


def _env_share(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not 0 <= value <= 1:
        raise ConfigError(f"{name}={value} must be between 0 and 1")
    return value


def _env_log_format(env: Mapping[str, str]) -> str:
    raw = (env.get("LILY_LOG_FORMAT") or "").strip().lower()
    if raw and raw not in LOG_FORMATS:
        raise ConfigError(f"LILY_LOG_FORMAT={raw!r}: expected one of {', '.join(LOG_FORMATS)}")
    return raw or "text"


def _env_log_level(env: Mapping[str, str], name: str, default: str) -> str:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    if raw.upper() not in LOG_LEVELS:
        raise ConfigError(f"{name}={raw!r}: expected one of {', '.join(LOG_LEVELS)}")
    return raw.upper()


def load_config_file(path: Path) -> LilyConfigFile:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"LILY_CONFIG {path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"LILY_CONFIG {path}: invalid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"LILY_CONFIG {path}: top level must be a mapping")
    try:
        return LilyConfigFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"LILY_CONFIG {path}: {where}: {message}") from None


def _env_number(
    env: Mapping[str, str], name: str, default: float, low: float, high: float
) -> float:
    raw = env.get(name)
    try:
        value = float(raw) if raw not in (None, "") else default
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low:g} and {high:g}, got {raw}")
    return value


def atlan_credentials_problem(env: Mapping[str, str]) -> str | None:
    """What is missing for LILY_HUB=atlan, as a one-line error, or None."""
    if not env.get("ATLAN_BASE_URL", "").strip():
        return "LILY_HUB=atlan needs ATLAN_BASE_URL (the Atlan tenant's URL)"
    oauth = env.get("ATLAN_OAUTH_CLIENT_ID") and env.get("ATLAN_OAUTH_CLIENT_SECRET")
    if not env.get("ATLAN_API_KEY") and not oauth:
        return (
            "LILY_HUB=atlan needs ATLAN_API_KEY, or ATLAN_OAUTH_CLIENT_ID and "
            "ATLAN_OAUTH_CLIENT_SECRET"
        )
    return None


class AtlanOptions(BaseModel):
    """Atlan as the hub (LILY_HUB=atlan): the tenant's URL, credentials and request pacing."""

    model_config = ConfigDict(frozen=True)

    base_url: str
    api_key: str | None = Field(default=None, repr=False)
    oauth_client_id: str | None = None
    oauth_client_secret: str | None = Field(default=None, repr=False)
    bulk_size: int = 50
    rate_per_min: float | None = 400
    retries: int = 5
    backoff_s: float = 1.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AtlanOptions:
        env = os.environ if env is None else env
        problem = atlan_credentials_problem(env)
        if problem:
            raise ConfigError(problem)
        return cls(
            base_url=env["ATLAN_BASE_URL"].strip(),
            api_key=env.get("ATLAN_API_KEY") or None,
            oauth_client_id=env.get("ATLAN_OAUTH_CLIENT_ID") or None,
            oauth_client_secret=env.get("ATLAN_OAUTH_CLIENT_SECRET") or None,
            bulk_size=int(_env_number(env, "LILY_ATLAN_BULK_SIZE", 50, 1, 500)),
            rate_per_min=_env_number(env, "LILY_ATLAN_RATE_PER_MIN", 400, 0, 1e6) or None,
            retries=int(_env_number(env, "LILY_ATLAN_RETRIES", 5, 0, 20)),
            backoff_s=_env_number(env, "LILY_ATLAN_BACKOFF_S", 1.0, 0, 60),
        )


# The variables `Settings.from_env` depends on; a change to any of them resolves anew.
_ENV_PREFIXES = ("LILY_", "ATLAN_", "AWS_")


class Settings(BaseModel):
    """Resolved settings; build with `Settings.from_env()`."""

    model_config = ConfigDict(frozen=True)

    home: Path
    kafka_bootstrap: str
    kafka_topics: tuple[str, ...]
    hub: Literal["local", "atlan"]
    config_path: Path | None
    max_event_bytes: int
    max_batch_events: int
    run_max_tenants: int
    webhook_max_body_bytes: int
    webhook_rate_per_s: float
    inbox: str  # "sqlite" or s3://bucket/prefix
    orphan_wait_s: int
    block_reject_share: float  # a rule failing more of a batch than this blocks the upsert
    block_min_events: int  # ... if the batch has at least this many events
    hub_retries: int  # times a hub_records step is retried while the hub is unavailable
    hub_retry_wait_s: int
    propagation_retry_s: int  # after a failed delivery run, wait this long before the next
    # What Dagster's processes and runs write to their logs (DEBUG adds every Dagster event).
    log_level: str = "INFO"
    log_format: str = "text"  # LILY_LOG_FORMAT: text | json (docs/operating.md)
    # Finished runs (and their event logs and intermediate files) older than this many days
    # are deleted by the run retention schedule; 0 keeps everything.
    run_retention_days: int = DEFAULT_RUN_RETENTION_DAYS
    # Shards per tenant of the bulk_backfill asset's partitions.
    backfill_shards: int = DEFAULT_BACKFILL_SHARDS
    # An S3-compatible endpoint (MinIO, moto) for s3:// inboxes, sources and broker storage.
    s3_endpoint_url: str | None = None
    # Where the embedded broker keeps its log (memory://, s3://, postgres://).
    broker_storage: str = DEFAULT_BROKER_STORAGE
    # Dagster's run, event-log and schedule storage in PostgreSQL (None: SQLite in
    # $LILY_HOME/dagster). Holds a password: never printed (redacted_url).
    dagster_pg_url: str | None = Field(default=None, repr=False)
    # Whether LILY_KAFKA_BOOTSTRAP was set (an external broker: `lily` starts none).
    external_kafka: bool = False
    atlan: AtlanOptions | None = None  # with hub == "atlan"
    # Tenant content sealed at rest (LILY_ENCRYPTION=off writes plaintext; sealed data
    # still opens), under data keys wrapped by the key service LILY_KMS names.
    encryption: bool = True
    metrics: bool = True  # LILY_METRICS: off records no pipeline metrics (docs/metrics.md)
    kms: str = "local"
    master_key: SecretStr | None = None  # LILY_MASTER_KEY (LILY_KMS=local)
    # The key-encryption key being replaced, read by `lily keys rotate` only.
    previous_kms: str | None = None  # LILY_PREVIOUS_KMS
    previous_master_key: SecretStr | None = None  # LILY_PREVIOUS_MASTER_KEY
    # boto3 reads AWS_DEFAULT_REGION itself, but not AWS_REGION (what other SDKs read).
    aws_region: str | None = None

    @classmethod
    def from_env(cls) -> Settings:
        """The settings of this process's environment, resolved once per environment."""
        env = {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)}
        return _resolved(tuple(sorted(env.items())), _config_stamp(env))

    @classmethod
    def resolve(cls, env: Mapping[str, str]) -> Settings:
        """Settings from `env`, every variable checked (ConfigError on the first problem)."""
        home = Path(env.get("LILY_HOME") or "./.lily").resolve()
        hub = env.get("LILY_HUB") or "local"
        if hub not in ("local", "atlan"):
            raise ConfigError(f"LILY_HUB={hub!r}: expected 'local' or 'atlan'")
        return cls(
            home=home,
            kafka_bootstrap=env.get("LILY_KAFKA_BOOTSTRAP") or f"127.0.0.1:{EMBEDDED_BROKER_PORT}",
            external_kafka=bool(env.get("LILY_KAFKA_BOOTSTRAP")),
            kafka_topics=_topics(env.get("LILY_KAFKA_TOPICS") or DEFAULT_TOPIC),
            hub=hub,  # type: ignore[arg-type]
            atlan=AtlanOptions.from_env(env) if hub == "atlan" else None,
            config_path=_config_path(env, home),
            inbox=_inbox(env.get("LILY_INBOX") or "sqlite"),
            broker_storage=check_broker_storage(
                env.get("LILY_BROKER_STORAGE") or DEFAULT_BROKER_STORAGE
            ),
            s3_endpoint_url=env.get("LILY_S3_ENDPOINT_URL") or None,
            dagster_pg_url=(
                check_pg_url(env["LILY_DAGSTER_PG_URL"]) if env.get("LILY_DAGSTER_PG_URL") else None
            ),
            encryption=_env_switch(env, "LILY_ENCRYPTION", True),
            metrics=_env_switch(env, "LILY_METRICS", True),
            kms=env.get("LILY_KMS") or "local",
            master_key=SecretStr(env["LILY_MASTER_KEY"]) if env.get("LILY_MASTER_KEY") else None,
            previous_kms=env.get("LILY_PREVIOUS_KMS") or None,
            previous_master_key=(
                SecretStr(env["LILY_PREVIOUS_MASTER_KEY"])
                if env.get("LILY_PREVIOUS_MASTER_KEY")
                else None
            ),
            aws_region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
            **_numbers(env),
        )

    @cached_property
    def config(self) -> LilyConfigFile:
        if self.config_path is None:
            return LilyConfigFile()
        return load_config_file(self.config_path)

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def staging_dir(self) -> Path:
        return self.home / "staging"

    @property
    def quarantine_dir(self) -> Path:
        return self.home / "quarantine"

    @property
    def propagation_dir(self) -> Path:
        """Each target's delivery position per tenant."""
        return self.home / "propagation"

    @property
    def dlq_dir(self) -> Path:
        """Each target's dead-letter queue per tenant."""
        return self.home / "dlq"

    @property
    def audit_dir(self) -> Path:
        """Each tenant's tamper-evident audit log (and the global one)."""
        return self.home / "audit"

    @property
    def keys_dir(self) -> Path:
        """The wrapped data key of each tenant (and the generated master key)."""
        return self.home / "keys"

    @property
    def hub_dir(self) -> Path:
        return self.home / "hub"

    @property
    def inbox_path(self) -> Path:
        return self.home / "inbox" / "inbox.sqlite"

    @property
    def io_dir(self) -> Path:
        return self.home / "io"

    @property
    def logs_dir(self) -> Path:
        """The logs of the processes `lily` starts (Dagster's, the broker's)."""
        return self.home / "logs"

    def topic_bindings(self) -> dict[str, str]:
        return self.config.topic_bindings()


def _numbers(env: Mapping[str, str]) -> dict[str, Any]:
    return {
        "max_event_bytes": _env_int(env, "LILY_MAX_EVENT_BYTES", DEFAULT_MAX_EVENT_BYTES),
        "max_batch_events": _env_int(env, "LILY_MAX_BATCH_EVENTS", DEFAULT_MAX_BATCH_EVENTS),
        "run_max_tenants": _env_int(env, "LILY_RUN_MAX_TENANTS", DEFAULT_RUN_MAX_TENANTS),
        "webhook_max_body_bytes": _env_int(
            env, "LILY_WEBHOOK_MAX_BODY_BYTES", DEFAULT_WEBHOOK_MAX_BODY_BYTES
        ),
        "webhook_rate_per_s": float(
            _env_int(env, "LILY_WEBHOOK_RATE_PER_S", int(DEFAULT_WEBHOOK_RATE_PER_S))
        ),
        "orphan_wait_s": _env_int(env, "LILY_ORPHAN_WAIT_S", 86_400, minimum=0),
        "block_reject_share": _env_share(env, "LILY_BLOCK_REJECT_SHARE", 0.5),
        "block_min_events": _env_int(env, "LILY_BLOCK_MIN_EVENTS", 100, minimum=1),
        "hub_retries": _env_int(env, "LILY_HUB_RETRIES", 3, minimum=0),
        "hub_retry_wait_s": _env_int(env, "LILY_HUB_RETRY_WAIT_S", 30, minimum=0),
        "propagation_retry_s": _env_int(env, "LILY_PROPAGATION_RETRY_S", 30, minimum=0),
        "log_level": _env_log_level(env, "LILY_LOG_LEVEL", "INFO"),
        "log_format": _env_log_format(env),
        "run_retention_days": _env_int(
            env, "LILY_RUN_RETENTION_DAYS", DEFAULT_RUN_RETENTION_DAYS, minimum=0
        ),
        "backfill_shards": _env_int(
            env, "LILY_BACKFILL_SHARDS", DEFAULT_BACKFILL_SHARDS, minimum=1, maximum=256
        ),
    }


def _topics(raw: str) -> tuple[str, ...]:
    topics = tuple(t.strip() for t in raw.split(",") if t.strip())
    if not topics:
        raise ConfigError("LILY_KAFKA_TOPICS names no topic")
    bad = [t for t in topics if not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", t)]
    if bad:
        raise ConfigError(f"LILY_KAFKA_TOPICS: invalid topic name {bad[0]!r}")
    return topics


def _env_switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("on", "true", "1", "yes"):
        return True
    if raw in ("off", "false", "0", "no"):
        return False
    raise ConfigError(f"{name}={env[name]!r}: expected on or off")


def _inbox(inbox: str) -> str:
    if inbox != "sqlite" and not _S3_URI.fullmatch(inbox):
        raise ConfigError(f"LILY_INBOX={inbox!r}: expected 'sqlite' or s3://bucket/prefix")
    return inbox


_BROKER_STORAGE = re.compile(
    r"memory://\S*|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/\S*)?|postgres(ql)?://\S+"
)


def check_pg_url(url: str, source: str = "LILY_DAGSTER_PG_URL") -> str:
    """`url` if it has the shape of a PostgreSQL URL, or ConfigError naming `source` (without
    the URL's password)."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
        raise ConfigError(
            f"{source}={redacted_url(url)!r}: expected "
            "postgresql://user[:password]@host[:port]/database"
        )
    if parts.path in ("", "/"):
        raise ConfigError(f"{source}={redacted_url(url)!r} names no database")
    return url


def redacted_url(url: str) -> str:
    """`url` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))


def check_broker_storage(url: str, source: str = "LILY_BROKER_STORAGE") -> str:
    """A storage URL for the embedded broker (Tansu's `--storage-engine`), or ConfigError
    naming `source`."""
    if not _BROKER_STORAGE.fullmatch(url):
        raise ConfigError(
            f"{source}={url!r}: expected memory://tansu/ (in memory, the default), "
            "s3://bucket/ or postgres://user:pass@host/db"
        )
    return url


def _config_path(env: Mapping[str, str], home: Path) -> Path | None:
    config_env = env.get("LILY_CONFIG")
    if config_env:
        path = Path(config_env).resolve()
        if not path.is_file():
            raise ConfigError(f"LILY_CONFIG={config_env}: no such file")
        return path
    default_config = home / "lily.yaml"
    return default_config if default_config.is_file() else None


def _config_stamp(env: Mapping[str, str]) -> tuple[str, int, int]:
    """Which LILY_CONFIG file, and its version: an edited file resolves anew."""
    home = Path(env.get("LILY_HOME") or "./.lily").resolve()
    path = Path(env["LILY_CONFIG"]).resolve() if env.get("LILY_CONFIG") else home / "lily.yaml"
    try:
        stat = path.stat()
    except OSError:
        return (str(path), -1, -1)
    return (str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _resolved(env: tuple[tuple[str, str], ...], config_stamp: tuple[str, int, int]) -> Settings:
    return Settings.resolve(dict(env))


def validate_tenant(tenant: str) -> str:
    """Raise ConfigError unless `tenant` is a valid tenant name (CLI arguments)."""
    if not is_tenant(tenant):
        raise ConfigError(f"invalid tenant {tenant!r}: must match {TENANT_PATTERN}")
    return tenant


class EnvVar(BaseModel):
    """One environment variable Lily reads, as documented in `environment.yaml`."""

    name: str
    default: str
    meaning: str


def environment_reference() -> list[EnvVar]:
    """Every variable read above, documented (docs/reference/settings.md is made of it)."""
    rows = yaml.safe_load((Path(__file__).parent / "environment.yaml").read_text())
    return [EnvVar.model_validate(row) for row in rows]
