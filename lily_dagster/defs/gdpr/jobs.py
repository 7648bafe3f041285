"""gdpr_erasure_job: `lily gdpr erase` launched from the Dagster UI (docs/gdpr.md).

Config (one flat block): `tenant`, `subject`, `dry_run`, `purge`. The subject is a user id
or an e-mail address, or its sealed form (`lily gdpr seal --tenant T --subject S`), which
keeps it out of Dagster's storage altogether. A plaintext subject is sealed in the run's
stored config as the run's first act (run_config.py); it was in Dagster's run storage from
the launch until then.

Two steps: `erase_data_subject` (every store of the tenant, lib/gdpr/erase.py) then
`deliver_erasure` (the records it rewrote to every target, as `updated` changes; skipped
when nothing changed), so a target that is down fails only the second, and re-executing
from the failure sends them again.
"""

from collections.abc import Iterator

from dagster import (
    Config,
    Failure,
    In,
    Nothing,
    OpExecutionContext,
    Out,
    Output,
    RunConfig,
    config_mapping,
    in_process_executor,
    job,
    op,
)
from pydantic import Field

from lily_dagster.defs.gdpr.run_config import replace_in_run_config
from lily_dagster.defs.resources import LilyResource
from lily_dagster.lib.audit import run_subject
from lily_dagster.lib.crypto import VALUE_PREFIX, CryptoError, cipher_for
from lily_dagster.lib.gdpr.erase import deliver_changes, delivery_summary, erase_subject
from lily_dagster.lib.gdpr.subject import Subject
from lily_dagster.settings import ConfigError, Settings, is_tenant, validate_tenant

REDACTED = "[redacted]"  # what a run's stored config keeps when sealing is off


class GdprErasureConfig(Config):
    tenant: str = Field(description="The tenant whose stores forget the subject.")
    subject: str = Field(
        description="The data subject: a user id or an e-mail address (compared "
        "case-insensitively), or its sealed form printed by `lily gdpr seal` (keeps it out "
        "of Dagster's storage entirely). A plaintext subject is replaced by its sealed form "
        "in this run's stored config as the run starts."
    )
    dry_run: bool = Field(default=False, description="Count what would change; change nothing.")
    purge: bool = Field(
        default=False,
        description="LILY_HUB=atlan: purge and recreate each changed asset, so Atlan's audit "
        "history of its old values goes too.",
    )


class EraseStepConfig(GdprErasureConfig):
    pass


class DeliverStepConfig(Config):
    tenant: str


@config_mapping
def _steps(config: GdprErasureConfig) -> RunConfig:
    return RunConfig(
        ops={
            "erase_data_subject": EraseStepConfig(**config.model_dump()),
            "deliver_erasure": DeliverStepConfig(tenant=config.tenant),
        }
    )


def _tenant(tenant: str) -> str:
    try:
        return validate_tenant(tenant)
    except ConfigError as exc:
        raise Failure(description=str(exc)) from None


def subject_of(context: OpExecutionContext, settings: Settings, tenant: str, given: str) -> Subject:
    """The subject the run was given: opened when sealed; when plaintext, sealed in the
    run's stored config first (before anything else can fail and leave it there)."""
    if not is_tenant(tenant):
        if not given.startswith(VALUE_PREFIX):
            replace_in_run_config(context.instance, context.run_id, "subject", given, REDACTED)
        _tenant(tenant)
    cipher = cipher_for(settings, tenant)
    if given.startswith(VALUE_PREFIX):
        try:
            return Subject(cipher.open_text(given) or "")
        except CryptoError as exc:
            raise Failure(description=f"subject: {exc} (sealed for another tenant?)") from None
    if given == REDACTED:
        raise Failure(
            description="this run's subject was redacted from its stored config: launch a new "
            "run with the subject"
        )
    sealed = cipher.seal_text(given) if cipher.enabled else REDACTED
    if not replace_in_run_config(context.instance, context.run_id, "subject", given, sealed or ""):
        context.log.warning(
            "the run storage could not be rewritten: this run's stored config keeps the "
            "subject in plaintext until the run is deleted (launch with `lily gdpr seal`'s "
            "output instead)"
        )
    try:
        return Subject(given)
    except ConfigError as exc:
        raise Failure(description=str(exc)) from None


@op(
    out=Out(Nothing, is_required=False),
    description="Erases the subject from every store of the tenant (hub, change log, "
    "staging, inbox, quarantine, dead letters, intermediates); audited without the subject.",
)
def erase_data_subject(
    context: OpExecutionContext, config: EraseStepConfig, lily: LilyResource
) -> Iterator[Output[None]]:
    settings = lily.settings()
    subject = subject_of(context, settings, config.tenant, config.subject)
    tenant = config.tenant
    try:
        summary = erase_subject(
            settings,
            tenant,
            subject,
            config.dry_run,
            purge=config.purge,
            sub=run_subject(context.run.tags),
            via=f"@run:{context.run_id}",
        )
    except ConfigError as exc:
        raise Failure(description=str(exc)) from None
    result = summary.as_dict()
    context.log.info(f"erasure request {summary.request_id} of {tenant}: {result}")
    if summary.records and not config.dry_run:
        yield Output(None, metadata={"records_changed": len(summary.records), **summary.stores})


@op(
    ins={"erased": In(Nothing)},
    description="Sends the records the erasure rewrote to every target of the tenant as "
    "`updated` changes (as propagation does).",
)
def deliver_erasure(
    context: OpExecutionContext, config: DeliverStepConfig, lily: LilyResource
) -> None:
    settings = lily.settings()
    results = delivery_summary(deliver_changes(settings, _tenant(config.tenant)))
    context.log.info(f"delivered: {results}")
    failed = {name: r["error"] for name, r in results.items() if r["error"]}
    if failed:
        raise Failure(description=f"targets unavailable (the propagation sensor retries): {failed}")


@job(
    config=_steps,
    executor_def=in_process_executor,
    description="GDPR erasure of one data subject from a tenant (config tenant, subject, "
    "dry_run, purge), then the changed records to every target. `lily gdpr seal` gives a "
    "subject that never appears in plaintext in Dagster's storage (docs/gdpr.md).",
    tags={"lily/source": "gdpr"},
)
def gdpr_erasure_job() -> None:
    deliver_erasure(erase_data_subject())
