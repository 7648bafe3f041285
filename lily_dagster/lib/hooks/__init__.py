"""Hooks: vectorised transforms of events frames, pre-ingest (before the hub upsert) and
post-consume (before each outbound target).

A hook is one module that registers itself: in `lily_dagster.lib.hooks.builtin`, or in a
third-party package through the entry point group `lily_dagster.hooks`:

    @register_hook("my-hook")
    class MyHook:
        stage = "pre_ingest"
        def configure(self, settings: dict) -> object: ...   # validate at load
        def apply(self, events: pl.DataFrame, config: object, ctx: HookContext) -> HookOutput: ...

`apply` gets a batch and returns the batch (same columns and types; it may add rows, e.g.
lineage references) and optionally rows it rejects, with a `reason` and `detail` each. A
hook that raises quarantines only the rows it fails on (found by bisection) with reason
`hook_error`; one that outlives its timeout quarantines the batch as `hook_timeout`; one
that changes the schema quarantines the batch as `hook_bad_output`. Never a silent pass.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import polars as pl

from lily_dagster.lib.envelope import to_rejects
from lily_dagster.lib.reasons import Reason
from lily_dagster.lib.registry import Registry
from lily_dagster.settings import ConfigError, HookRef, LilyConfigFile

Stage = Literal["pre_ingest", "post_consume"]
DEFAULT_PRE_INGEST: tuple[str, ...] = ("owner-normalise",)
DEFAULT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class HookContext:
    tenant: str
    # Which of these qualified names the hub already holds (None: no hub at hand).
    hub_lookup: Callable[[list[str]], set[str]] | None = None


@dataclass
class HookOutput:
    events: pl.DataFrame
    # Rows the hook refuses: the input's columns plus `reason` and `detail`.
    rejected: pl.DataFrame | None = None


class Hook(Protocol):
    name: str
    stage: Stage

    def configure(self, settings: dict[str, Any]) -> Any:
        """Check and compile the hook's settings; raise ConfigError with a clear message."""
        ...

    def apply(
        self, events: pl.DataFrame, config: Any, ctx: HookContext
    ) -> HookOutput | pl.DataFrame: ...


_REGISTRY: Registry[Hook] = Registry("hook", "lily_dagster.lib.hooks.builtin", "lily_dagster.hooks")
register_hook = _REGISTRY.register
get_hook = _REGISTRY.get
hook_names = _REGISTRY.names


@dataclass(frozen=True)
class ConfiguredHook:
    hook: Hook
    config: Any
    timeout_s: float

    @property
    def name(self) -> str:
        return self.hook.name


def build_chain(refs: Iterable[HookRef], stage: Stage) -> list[ConfiguredHook]:
    """Hooks in configured order, each configured; unknown names and bad settings fail here."""
    chain = []
    for ref in refs:
        hook = get_hook(ref.name)
        if hook is None:
            raise ConfigError(f"unknown hook {ref.name!r}; known: {hook_names()}")
        if hook.stage != stage:
            raise ConfigError(f"hook {ref.name!r} is a {hook.stage} hook, not {stage}")
        try:
            config = hook.configure(dict(ref.settings))
        except ConfigError as exc:
            raise ConfigError(f"hook {ref.name!r}: {exc}") from None
        chain.append(ConfiguredHook(hook, config, ref.timeout_s or DEFAULT_TIMEOUT_S))
    return chain


def tenant_chain(config: LilyConfigFile, tenant: str, stage: Stage) -> list[ConfiguredHook]:
    """The tenant's own chain if it configures one, else the default chain."""
    own = config.tenant(tenant)
    hooks = own.hooks if own is not None and own.hooks is not None else config.hooks
    refs = getattr(hooks, stage) if hooks is not None else None
    if refs is None:
        refs = [HookRef(name=n) for n in (DEFAULT_PRE_INGEST if stage == "pre_ingest" else ())]
    return build_chain(refs, stage)


def check_hook_config(config: LilyConfigFile) -> None:
    """Build every configured chain once, so bad hook configuration fails at load time."""
    for stage in ("pre_ingest", "post_consume"):
        tenant_chain(config, "__defaults__", stage)
        for tenant in config.tenants:
            tenant_chain(config, tenant.name, stage)


@dataclass
class ChainResult:
    events: pl.DataFrame
    rejects: pl.DataFrame  # REJECT_SCHEMA
    stats: dict[str, dict[str, float]] = field(default_factory=dict)


_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="lily-hook")


def _call(hook: ConfiguredHook, events: pl.DataFrame, ctx: HookContext) -> HookOutput:
    future = _POOL.submit(hook.hook.apply, events, hook.config, ctx)
    # A Python thread cannot be killed: a hung hook keeps its worker, but the batch moves on.
    out = future.result(timeout=hook.timeout_s)
    return out if isinstance(out, HookOutput) else HookOutput(out)


def _failing_rows(
    hook: ConfiguredHook, events: pl.DataFrame, ctx: HookContext
) -> tuple[pl.DataFrame, pl.DataFrame, str]:
    """Bisect a batch a hook raises on: (rows it processes, rows it fails on, first error)."""
    good: list[pl.DataFrame] = []
    bad: list[pl.DataFrame] = []
    error = ""
    stack = [events]
    while stack:
        part = stack.pop()
        try:
            good.append(_call(hook, part, ctx).events)
        except concurrent.futures.TimeoutError:
            raise
        except Exception as exc:
            if part.height <= 1:
                bad.append(part)
                error = error or f"{type(exc).__name__}: {exc}"
            else:
                half = part.height // 2
                stack.extend([part.slice(half), part.slice(0, half)])
    empty = events.clear()
    return (pl.concat(good) if good else empty, pl.concat(bad) if bad else empty, error)


def _rejects(
    rows: pl.DataFrame, reason: Reason | str | pl.Expr, detail: str | pl.Expr, tenant: str
) -> pl.DataFrame:
    detail_expr = detail if isinstance(detail, pl.Expr) else pl.lit(detail)
    reason_expr = reason if isinstance(reason, pl.Expr) else pl.lit(str(reason))
    return to_rejects(
        rows.select(
            "event_id",
            reason_expr.cast(pl.String).alias("reason"),
            detail_expr.cast(pl.String).alias("detail"),
            "raw",
            "origin",
        ),
        tenant,
    )


def run_chain(events: pl.DataFrame, chain: list[ConfiguredHook], ctx: HookContext) -> ChainResult:
    rejects: list[pl.DataFrame] = []
    stats: dict[str, dict[str, float]] = {}
    schema = events.schema
    for hook in chain:
        if events.is_empty():
            break
        started = time.perf_counter()
        rows_in = events.height
        try:
            out = _call(hook, events, ctx)
            if out.events.schema != schema:
                diff = sorted(set(out.events.schema.items()) ^ set(schema.items()), key=str)[:3]
                rejects.append(
                    _rejects(
                        events,
                        Reason.HOOK_BAD_OUTPUT,
                        f"{hook.name}: schema changed {diff}",
                        ctx.tenant,
                    )
                )
                events = events.clear()
                continue
            if out.rejected is not None and out.rejected.height:
                rejects.append(
                    _rejects(
                        out.rejected,
                        pl.col("reason"),  # the hook's own reason code, e.g. bad_lineage
                        pl.format("{}: {}", pl.lit(hook.name), pl.col("detail")),
                        ctx.tenant,
                    )
                )
            events = out.events
        except concurrent.futures.TimeoutError:
            rejects.append(
                _rejects(
                    events,
                    Reason.HOOK_TIMEOUT,
                    f"{hook.name}: no result within {hook.timeout_s:g} s",
                    ctx.tenant,
                )
            )
            events = events.clear()
        except Exception:
            try:
                events, failed, error = _failing_rows(hook, events, ctx)
            except concurrent.futures.TimeoutError:
                failed, error = events, f"no result within {hook.timeout_s:g} s"
                events = events.clear()
            rejects.append(_rejects(failed, Reason.HOOK_ERROR, f"{hook.name}: {error}", ctx.tenant))
        stats[hook.name] = {
            "rows_in": rows_in,
            "rows_out": events.height,
            "seconds": round(time.perf_counter() - started, 4),
        }
    all_rejects = pl.concat(rejects) if rejects else _rejects(events.clear(), "", "", ctx.tenant)
    return ChainResult(events, all_rejects, stats)
