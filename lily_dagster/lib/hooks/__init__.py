"""Hooks: vectorised transforms of events frames, pre-ingest (before the hub upsert) and
post-consume (before each outbound target).

A hook is one module that registers itself: in `lily_dagster.lib.hooks.builtin`, or in a
third-party package through the entry point group `lily_dagster.hooks`:

    @register_hook("my-hook")
    class MyHook:
        stage = "pre_ingest"
        class Options(PluginOptions):          # its settings, validated at load
            level: int = Field(1, description="...")
        def configure(self, options: Options) -> object: ...  # optional: compile them
        def apply(self, events: pl.DataFrame, config: object, ctx: HookContext) -> HookOutput: ...

`config` is what `configure` returned, or the options themselves without a `configure`.

`apply` gets a batch and returns the batch (same columns and types; it may add rows, e.g.
lineage references) and optionally rows it rejects, with a `reason` and `detail` each. A
hook that raises quarantines only the rows it fails on (found by bisection) with reason
`hook_error`; one that outlives its timeout quarantines the batch as `hook_timeout`; one
that changes the schema quarantines the batch as `hook_bad_output`. Never a silent pass.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import polars as pl

from lily_dagster.lib.envelope import to_rejects

# PluginOptions is re-exported: a hook module needs only this package.
from lily_dagster.lib.plugins import PluginOptions as PluginOptions
from lily_dagster.lib.plugins import registry
from lily_dagster.lib.reasons import Reason
from lily_dagster.settings import ConfigError, HookRef, LilyConfigFile

Stage = Literal["pre_ingest", "post_consume"]
# erased-subjects first: an erased data subject is masked before anything else sees it.
DEFAULT_PRE_INGEST: tuple[str, ...] = ("erased-subjects", "owner-normalise", "pii-classify")
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

    def apply(
        self, events: pl.DataFrame, config: Any, ctx: HookContext
    ) -> HookOutput | pl.DataFrame: ...


_REGISTRY = registry("hook", "lily_dagster.lib.hooks.builtin", "lily_dagster.hooks")
register_hook = _REGISTRY.register
get_hook = _REGISTRY.find
hook_names = _REGISTRY.names


@dataclass(frozen=True)
class ConfiguredHook:
    hook: Hook
    config: Any
    timeout_s: float

    @property
    def name(self) -> str:
        return self.hook.name


def known_kinds(kinds: list[str], catalogue: dict[str, str]) -> list[str]:
    """A `kinds` option: a subset of the catalogue's keys, in the catalogue's order."""
    bad = [k for k in kinds if k not in catalogue]
    if bad:
        raise ValueError(f"unknown kinds {bad}; known: {sorted(catalogue)}")
    return [k for k in catalogue if k in kinds]


def polars_regex(pattern: Any, what: str) -> str:
    """Check a regex with the engine that will run it (polars' Rust regex, not Python's)."""
    if not isinstance(pattern, str):
        raise ConfigError(f"{what} must be a regex string, got {pattern!r}")
    try:
        pl.Series([""]).str.contains(pattern)
    except pl.exceptions.ComputeError as exc:
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
        raise ConfigError(f"{what} {pattern!r} is not a regex ({first[:120]})".lstrip()) from None
    return pattern


def build_chain(refs: Iterable[HookRef], stage: Stage) -> list[ConfiguredHook]:
    """Hooks in configured order, each configured; unknown names and bad settings fail here."""
    chain = []
    for ref in refs:
        hook: Hook = _REGISTRY.get(ref.name)
        if hook.stage != stage:
            raise ConfigError(f"hook {ref.name!r} is a {hook.stage} hook, not {stage}")
        options = _REGISTRY.options(ref.name, ref.settings)
        configure = getattr(hook, "configure", None)
        try:
            config = configure(options) if configure is not None else options
        except (ConfigError, TypeError, ValueError, AttributeError, KeyError) as exc:
            raise ConfigError(f"hook {ref.name!r}: {exc}") from None
        chain.append(ConfiguredHook(hook, config, ref.timeout_s or DEFAULT_TIMEOUT_S))
    return chain


def tenant_chain(config: LilyConfigFile, tenant: str, stage: Stage) -> list[ConfiguredHook]:
    """The hooks of `stage` for `tenant`."""
    own = config.tenant(tenant)
    # Per stage: the tenant's chain, else the file's, else the built-in default.
    refs = getattr(own.hooks, stage) if own is not None and own.hooks is not None else None
    if refs is None and config.hooks is not None:
        refs = getattr(config.hooks, stage)
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


class HookTimeoutError(Exception):
    pass


class HookSchemaError(Exception):
    pass


def _call(hook: ConfiguredHook, events: pl.DataFrame, ctx: HookContext) -> HookOutput:
    """Apply a hook on its own daemon thread, within its timeout; check what it returns.

    A Python thread cannot be killed: a hung call keeps its thread, but it holds no shared
    worker, so other hooks and tenants go on.
    """
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["out"] = hook.hook.apply(events, hook.config, ctx)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, name=f"lily-hook-{hook.name}", daemon=True)
    thread.start()
    thread.join(hook.timeout_s)
    if thread.is_alive():
        raise HookTimeoutError(f"no result within {hook.timeout_s:g} s")
    if "error" in box:
        raise box["error"]
    out = box["out"]
    out = out if isinstance(out, HookOutput) else HookOutput(out)
    if not isinstance(out.events, pl.DataFrame) or out.events.schema != events.schema:
        got = (
            out.events.schema if isinstance(out.events, pl.DataFrame) else type(out.events).__name__
        )
        diff = (
            sorted(set(dict(got).items()) ^ set(events.schema.items()), key=str)[:3]
            if isinstance(got, pl.Schema)
            else got
        )
        raise HookSchemaError(f"schema changed: {diff}")
    return out


@dataclass
class _Applied:
    events: list[pl.DataFrame] = field(default_factory=list)
    refused: list[pl.DataFrame] = field(default_factory=list)  # HookOutput.rejected frames
    failed: list[pl.DataFrame] = field(default_factory=list)  # rows the hook raised on
    error: str = ""


def _bisect(hook: ConfiguredHook, events: pl.DataFrame, ctx: HookContext) -> _Applied:
    """Apply a hook that raised on the whole batch to halves, down to single rows, keeping
    what each part returns or refuses and the rows it raises on. A timeout or a schema
    change in any part stops the search: it concerns the batch, not a row."""
    applied = _Applied()
    stack = [events]
    while stack:
        part = stack.pop()
        try:
            out = _call(hook, part, ctx)
        except (HookTimeoutError, HookSchemaError):
            raise
        except Exception as exc:
            if part.height <= 1:
                applied.failed.append(part)
                applied.error = applied.error or f"{type(exc).__name__}: {exc}"
            else:
                half = part.height // 2
                stack.extend([part.slice(half), part.slice(0, half)])
            continue
        applied.events.append(out.events)
        if out.rejected is not None and out.rejected.height:
            applied.refused.append(out.rejected)
    return applied


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


def _refused(frames: list[pl.DataFrame], hook: str, tenant: str) -> list[pl.DataFrame]:
    """Rows a hook refused on purpose, with its own reason code (e.g. bad_lineage)."""
    return [
        _rejects(f, pl.col("reason"), pl.format("{}: {}", pl.lit(hook), pl.col("detail")), tenant)
        for f in frames
        if f.height
    ]


def run_chain(events: pl.DataFrame, chain: list[ConfiguredHook], ctx: HookContext) -> ChainResult:
    """Run the hooks in order. Every row that goes in comes out, refused by a hook with its
    reason, or quarantined with the failing hook's name: nothing is dropped silently."""
    rejects: list[pl.DataFrame] = []
    stats: dict[str, dict[str, float]] = {}
    for hook in chain:
        if events.is_empty():
            break
        started = time.perf_counter()
        rows_in = events.height
        try:
            try:
                out = _call(hook, events, ctx)
                applied = _Applied([out.events], [out.rejected] if out.rejected is not None else [])
            except (HookTimeoutError, HookSchemaError):
                raise
            except Exception:
                applied = _bisect(hook, events, ctx)
            rejects += _refused(applied.refused, hook.name, ctx.tenant)
            if applied.failed:
                rejects.append(
                    _rejects(
                        pl.concat(applied.failed),
                        Reason.HOOK_ERROR,
                        f"{hook.name}: {applied.error}",
                        ctx.tenant,
                    )
                )
            events = pl.concat(applied.events) if applied.events else events.clear()
        except HookTimeoutError as exc:
            rejects.append(_rejects(events, Reason.HOOK_TIMEOUT, f"{hook.name}: {exc}", ctx.tenant))
            events = events.clear()
        except HookSchemaError as exc:
            rejects.append(
                _rejects(events, Reason.HOOK_BAD_OUTPUT, f"{hook.name}: {exc}", ctx.tenant)
            )
            events = events.clear()
        stats[hook.name] = {
            "rows_in": rows_in,
            "rows_out": events.height,
            "seconds": round(time.perf_counter() - started, 4),
        }
    all_rejects = pl.concat(rejects) if rejects else _rejects(events.clear(), "", "", ctx.tenant)
    return ChainResult(events, all_rejects, stats)
