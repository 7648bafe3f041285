"""The hook framework: chains built (and refused) at load, per-tenant chains, and run_chain's
promises: a hook's failures quarantine only what they must, with the hook named, and no
event is ever lost."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from lily_dagster.lib.envelope import REJECT_SCHEMA, decode_envelopes
from lily_dagster.lib.hooks import (
    DEFAULT_TIMEOUT_S,
    ChainResult,
    HookContext,
    HookOutput,
    PluginOptions,
    build_chain,
    check_hook_config,
    register_hook,
    run_chain,
    tenant_chain,
)
from lily_dagster.settings import ConfigError, HookRef, LilyConfigFile, load_config_file
from lily_dagster_tests.support import envelopes

# --- events -------------------------------------------------------------------------------


def envelope(i: int, name: str) -> dict[str, Any]:
    return envelopes.envelope(
        f"{envelopes.ORDERS}/{name}",
        event_id=f"evt-{i:03d}",
        type_name="Column",
        attributes={"owner_users": [" JDoe "], "description": f"about {name}"},
    )


def frame(names: list[str]) -> pl.DataFrame:
    payloads = [json.dumps(envelope(i, n)) for i, n in enumerate(names)]
    decoded = decode_envelopes(
        payloads,
        [f"test/{i}" for i in range(len(payloads))],
        tenant="acme",
        max_event_bytes=1 << 20,
    )
    assert decoded.rejects.is_empty()
    return decoded.events


def chain_of(*refs: str | dict[str, Any]) -> list[Any]:
    return build_chain([HookRef.model_validate(r) for r in refs], "pre_ingest")


def run(events: pl.DataFrame, *refs: str | dict[str, Any]) -> ChainResult:
    return run_chain(events, chain_of(*refs), HookContext(tenant="acme"))


def assert_nothing_lost(events: pl.DataFrame, result: ChainResult) -> None:
    """Every input row is either in the output or rejected with its own event_id and raw."""
    assert result.rejects.schema == pl.Schema(REJECT_SCHEMA)
    assert events.height == result.events.height + result.rejects.height
    given = set(events.select("event_id", "raw").iter_rows())
    out = set(result.events.select("event_id", "raw").iter_rows())
    rejected = set(result.rejects.select("event_id", "raw").iter_rows())
    assert out | rejected == given
    assert not out & rejected
    assert set(result.rejects.get_column("tenant").to_list()) <= {"acme"}
    assert result.rejects.get_column("quarantine_id").null_count() == 0


def rejected_names(result: ChainResult) -> dict[str, str]:
    """name of each rejected event (read back from its raw payload) → reason."""
    return {
        json.loads(raw)["asset"]["name"]: reason
        for raw, reason in result.rejects.select("raw", "reason").iter_rows()
    }


# --- hooks defined for these tests (the registry is global: names start with test-fw-) -----


def _has(events: pl.DataFrame, word: str) -> pl.Series:
    return events.get_column("name").str.contains(word)


@register_hook("test-fw-boom")
class Boom:
    """Fails on any batch holding a row whose name contains "boom"."""

    stage = "pre_ingest"

    def configure(self, settings: dict[str, Any]) -> None:
        return None

    def apply(self, events: pl.DataFrame, config: None, ctx: HookContext) -> pl.DataFrame:
        if _has(events, "boom").any():
            raise ValueError("cannot digest boom")
        return events


def _appender(suffix: str) -> type:
    class Append:
        stage = "pre_ingest"

        def configure(self, settings: dict[str, Any]) -> None:
            return None

        def apply(self, events: pl.DataFrame, config: None, ctx: HookContext) -> pl.DataFrame:
            return events.with_columns(pl.col("description").fill_null("") + suffix)

    return Append


register_hook("test-fw-append-a")(_appender("+a"))
register_hook("test-fw-append-b")(_appender("+b"))


@register_hook("test-fw-sleepy")
class Sleepy:
    stage = "pre_ingest"

    def configure(self, settings: dict[str, Any]) -> None:
        return None

    def apply(self, events: pl.DataFrame, config: None, ctx: HookContext) -> pl.DataFrame:
        time.sleep(1.0)
        return events


@register_hook("test-fw-drop-column")
class DropColumn:
    stage = "pre_ingest"

    def configure(self, settings: dict[str, Any]) -> None:
        return None

    def apply(self, events: pl.DataFrame, config: None, ctx: HookContext) -> pl.DataFrame:
        return events.drop("description")


@register_hook("test-fw-retype")
class Retype:
    stage = "pre_ingest"

    def configure(self, settings: dict[str, Any]) -> None:
        return None

    def apply(self, events: pl.DataFrame, config: None, ctx: HookContext) -> pl.DataFrame:
        return events.with_columns(pl.col("event_time").dt.to_string())


def _refuse(events: pl.DataFrame) -> HookOutput:
    bad = _has(events, "refuse")
    return HookOutput(
        events.filter(~bad),
        events.filter(bad).with_columns(
            pl.lit("test_refused").alias("reason"),
            pl.format("will not take {}", pl.col("name")).alias("detail"),
        ),
    )


@register_hook("test-fw-refuse")
class Refuse:
    stage = "pre_ingest"

    def configure(self, settings: dict[str, Any]) -> None:
        return None

    def apply(self, events: pl.DataFrame, config: None, ctx: HookContext) -> HookOutput:
        return _refuse(events)


@register_hook("test-fw-refuse-and-boom")
class RefuseAndBoom:
    """Refuses rows named *refuse* and fails on batches holding a row named *boom*."""

    stage = "pre_ingest"

    def configure(self, settings: dict[str, Any]) -> None:
        return None

    def apply(self, events: pl.DataFrame, config: None, ctx: HookContext) -> HookOutput:
        if _has(events, "boom").any():
            raise ValueError("cannot digest boom")
        return _refuse(events)


@register_hook("test-fw-boom-or-drop")
class BoomOrDrop:
    """Fails on rows named *boom*; on every other batch returns a frame without description."""

    stage = "pre_ingest"

    def configure(self, settings: dict[str, Any]) -> None:
        return None

    def apply(self, events: pl.DataFrame, config: None, ctx: HookContext) -> pl.DataFrame:
        if _has(events, "boom").any():
            raise ValueError("cannot digest boom")
        return events.drop("description")


@register_hook("test-fw-boom-or-slow")
class BoomOrSlow:
    """Fails on rows named *boom*; outlives any short timeout on rows named *slow*."""

    stage = "pre_ingest"

    def configure(self, settings: dict[str, Any]) -> None:
        return None

    def apply(self, events: pl.DataFrame, config: None, ctx: HookContext) -> pl.DataFrame:
        if _has(events, "boom").any():
            raise ValueError("cannot digest boom")
        if _has(events, "slow").any():
            time.sleep(1.0)
        return events


_RELEASE = threading.Event()


@register_hook("test-fw-hangs")
class Hangs:
    """Hangs (as a hook waiting on a dead network peer would) until the test releases it."""

    stage = "pre_ingest"

    def configure(self, settings: dict[str, Any]) -> None:
        return None

    def apply(self, events: pl.DataFrame, config: None, ctx: HookContext) -> pl.DataFrame:
        _RELEASE.wait(30)
        return events


@register_hook("test-fw-post")
class Post:
    stage = "post_consume"

    def configure(self, settings: dict[str, Any]) -> None:
        return None

    def apply(self, events: pl.DataFrame, config: None, ctx: HookContext) -> pl.DataFrame:
        return events


@register_hook("test-fw-needs-level")
class NeedsLevel:
    stage = "pre_ingest"

    class Options(PluginOptions):
        level: int

    def configure(self, options: Options) -> int:
        return options.level

    def apply(self, events: pl.DataFrame, config: int, ctx: HookContext) -> pl.DataFrame:
        return events


# --- build_chain: every configuration problem fails at load ---------------------------------


def load_error(*refs: str | dict[str, Any], stage: str = "pre_ingest") -> str:
    with pytest.raises(ConfigError) as info:
        build_chain([HookRef.model_validate(r) for r in refs], stage)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message, message
    return message


def test_unknown_hook_name_fails_at_load_naming_it_and_the_known_ones() -> None:
    message = load_error("owner-normalise", "pii-clasify")
    assert "'pii-clasify'" in message
    assert "pii-classify" in message  # the known hooks, so the typo is easy to spot


def test_hook_of_the_other_stage_fails_at_load() -> None:
    message = load_error("test-fw-post")
    assert "'test-fw-post'" in message and "post_consume" in message
    assert "'owner-normalise'" in load_error("owner-normalise", stage="post_consume")
    assert [h.name for h in build_chain([HookRef(name="test-fw-post")], "post_consume")] == [
        "test-fw-post"
    ]


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        (
            {"name": "glossary-tags", "settings": {"rules": [{"qualified_name": "(unclosed"}]}},
            "not a regex",
        ),
        (
            {
                "name": "glossary-tags",
                "settings": {"rules": [{"qualified_name": "x", "add_tags": ["PII"]}]},
            },
            "rules.0: unknown setting 'add_tags'",
        ),
        (
            {"name": "glossary-tags", "settings": {"rules": []}},
            "rules: List should have at least 1",
        ),
        ({"name": "glossary-tags", "settings": {"rule": [{"qualified_name": "x"}]}}, "'rule'"),
        ({"name": "pii-classify", "settings": {"colour": "red"}}, "'colour'"),
        ({"name": "pii-classify", "settings": {"kinds": ["email", "shoe_size"]}}, "shoe_size"),
        ({"name": "pii-mask", "settings": {"name_types": "Dash[board"}}, "not a regex"),
        ({"name": "owner-normalise", "settings": {"lower": True}}, "lower"),
        ({"name": "ownership-map", "settings": {}}, "needs users, groups or file"),
        ({"name": "ownership-map", "settings": {"users": {"a": "b"}, "unmapped": "x"}}, "keep"),
        ({"name": "lineage-check", "settings": {"reference": "Asset"}}, "'reference'"),
        (
            {"name": "test-fw-needs-level", "settings": {"level": "high"}},
            "level: Input should be a valid integer",
        ),
    ],
)
def test_bad_settings_fail_at_load_with_the_hook_named(ref: dict[str, Any], expected: str) -> None:
    message = load_error("owner-normalise", ref)
    assert message.startswith(f"hook {ref['name']!r}: "), message
    assert expected in message


@pytest.mark.parametrize(
    "ref",
    [
        # YAML `tags: PII` instead of `tags: [PII]`: must not become the tags P and I
        {"name": "pii-classify", "settings": {"tags": "PII"}},
        # YAML `users: [U1]` instead of a mapping
        {"name": "ownership-map", "settings": {"users": ["U1"]}},
        # YAML `add_classifications: PII`: must not become the tags P and I either
        {
            "name": "glossary-tags",
            "settings": {"rules": [{"qualified_name": "x", "add_classifications": "PII"}]},
        },
    ],
    ids=["tags-as-string", "users-as-list", "classifications-as-string"],
)
def test_settings_of_the_wrong_type_fail_at_load_with_the_hook_named(ref: dict[str, Any]) -> None:
    message = load_error(ref)
    assert message.startswith(f"hook {ref['name']!r}: "), message


@pytest.mark.parametrize(
    "ref",
    [
        # look-around: Python's `re` compiles it, the polars (Rust) engine that runs it cannot
        {
            "name": "glossary-tags",
            "settings": {
                "rules": [{"qualified_name": "^(?!default/)", "add_classifications": ["X"]}]
            },
        },
        {"name": "pii-mask", "settings": {"name_types": "(?<!Power)Dashboard"}},
    ],
    ids=["glossary-tags", "pii-mask"],
)
def test_regex_the_hook_cannot_run_fails_at_load_not_on_every_event(ref: dict[str, Any]) -> None:
    message = load_error(ref)
    assert message.startswith(f"hook {ref['name']!r}: "), message


def test_chain_keeps_order_settings_and_timeouts() -> None:
    chain = chain_of(
        "test-fw-append-b",
        {"name": "test-fw-needs-level", "settings": {"level": 3}, "timeout_s": 2.5},
        "test-fw-append-a",
    )
    assert [h.name for h in chain] == [
        "test-fw-append-b",
        "test-fw-needs-level",
        "test-fw-append-a",
    ]
    assert chain[1].config == 3
    assert [h.timeout_s for h in chain] == [DEFAULT_TIMEOUT_S, 2.5, DEFAULT_TIMEOUT_S]


# --- which chain a tenant gets --------------------------------------------------------------


def names(config: LilyConfigFile, tenant: str, stage: str = "pre_ingest") -> list[str]:
    return [h.name for h in tenant_chain(config, tenant, stage)]  # type: ignore[arg-type]


def test_tenant_chain_over_file_default_over_builtin_default() -> None:
    config = LilyConfigFile.model_validate(
        {
            "hooks": {"pre_ingest": ["owner-normalise", "pii-classify", "pii-mask"]},
            "tenants": [
                {"name": "acme", "hooks": {"pre_ingest": ["pii-mask", "test-fw-append-a"]}},
                {"name": "globex"},
                {"name": "initech", "hooks": {"pre_ingest": []}},
            ],
        }
    )
    assert names(config, "acme") == ["pii-mask", "test-fw-append-a"]
    assert names(config, "globex") == ["owner-normalise", "pii-classify", "pii-mask"]
    assert names(config, "not-configured") == ["owner-normalise", "pii-classify", "pii-mask"]
    assert names(config, "initech") == []  # explicitly no hooks
    assert names(config, "acme", "post_consume") == []
    # Without any hooks configured: the built-in default (classification, no masking).
    bare = LilyConfigFile.model_validate({"tenants": [{"name": "acme"}]})
    assert names(bare, "acme") == ["erased-subjects", "owner-normalise", "pii-classify"]
    assert names(bare, "anyone") == ["erased-subjects", "owner-normalise", "pii-classify"]
    assert names(LilyConfigFile(), "acme", "post_consume") == []


def test_tenant_configuring_one_stage_keeps_the_file_chain_of_the_other() -> None:
    # acme adds a post-consume hook; it did not ask to lose the file's PII classification.
    config = LilyConfigFile.model_validate(
        {
            "hooks": {"pre_ingest": ["owner-normalise", "pii-classify", "pii-mask"]},
            "tenants": [{"name": "acme", "hooks": {"post_consume": ["test-fw-post"]}}],
        }
    )
    assert names(config, "acme", "post_consume") == ["test-fw-post"]
    assert names(config, "acme") == ["owner-normalise", "pii-classify", "pii-mask"]


# --- check_hook_config and the YAML file -----------------------------------------------------


def test_check_hook_config_accepts_a_good_file() -> None:
    config = LilyConfigFile.model_validate(
        {
            "hooks": {
                "pre_ingest": [
                    "owner-normalise",
                    {"name": "pii-classify", "settings": {"kinds": ["email"]}, "timeout_s": 5},
                ],
                "post_consume": ["test-fw-post"],
            },
            "tenants": [{"name": "acme", "hooks": {"pre_ingest": ["lineage-check"]}}],
        }
    )
    check_hook_config(config)  # raises on any problem


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"hooks": {"pre_ingest": ["no-such-hook"]}}, "'no-such-hook'"),
        (
            {"tenants": [{"name": "acme"}, {"name": "globex", "hooks": {"pre_ingest": ["nope"]}}]},
            "'nope'",
        ),
        ({"hooks": {"post_consume": ["owner-normalise"]}}, "not post_consume"),
        (
            {
                "tenants": [
                    {
                        "name": "acme",
                        "hooks": {
                            "pre_ingest": [
                                {"name": "glossary-tags", "settings": {"rules": [{"x": 1}]}}
                            ]
                        },
                    }
                ]
            },
            "hook 'glossary-tags': rules.0",
        ),
    ],
    ids=["file-default", "one-tenant", "stage", "tenant-settings"],
)
def test_check_hook_config_finds_any_bad_chain(data: dict[str, Any], expected: str) -> None:
    config = LilyConfigFile.model_validate(data)
    with pytest.raises(ConfigError, match=expected) as info:
        check_hook_config(config)
    assert "\n" not in str(info.value)


def test_yaml_items_are_names_or_mappings(tmp_path: Path) -> None:
    path = tmp_path / "lily.yaml"
    path.write_text(
        "hooks:\n"
        "  pre_ingest:\n"
        "    - owner-normalise\n"
        "    - name: pii-classify\n"
        "      settings: {tags: [Sensitive]}\n"
        "      timeout_s: 0.5\n"
    )
    chain = tenant_chain(load_config_file(path), "acme", "pre_ingest")
    assert [(h.name, h.timeout_s) for h in chain] == [
        ("owner-normalise", DEFAULT_TIMEOUT_S),
        ("pii-classify", 0.5),
    ]
    assert chain[1].config["tags"] == ["Sensitive"]


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("{name: pii-classify, timeout: 5}", "timeout"),
        ("{name: pii-classify, timeout_s: 0}", "timeout_s"),
        ("{settings: {}}", "name"),
    ],
)
def test_yaml_item_mistakes_are_one_line_errors(tmp_path: Path, item: str, expected: str) -> None:
    path = tmp_path / "lily.yaml"
    path.write_text(f"hooks:\n  pre_ingest:\n    - {item}\n")
    with pytest.raises(ConfigError, match=expected) as info:
        load_config_file(path)
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)


# --- run_chain ----------------------------------------------------------------------------


def test_rows_a_hook_fails_on_are_quarantined_the_rest_go_on_through_later_hooks() -> None:
    events = frame(["ID", "boom_1", "AMOUNT", "STATUS", "kaboom", "NOTE", "EMAIL", "CITY"])
    result = run(events, "test-fw-append-a", "test-fw-boom", "test-fw-append-b")
    assert_nothing_lost(events, result)
    assert rejected_names(result) == {"boom_1": "hook_error", "kaboom": "hook_error"}
    for detail in result.rejects.get_column("detail"):
        assert detail.startswith("test-fw-boom: ") and "cannot digest boom" in detail
    # The survivors went through the hooks before and after the failing one, in order.
    assert result.events.select("name", "description").rows() == [
        (n, f"about {n}+a+b") for n in ["ID", "AMOUNT", "STATUS", "NOTE", "EMAIL", "CITY"]
    ]
    assert result.stats["test-fw-boom"]["rows_in"] == 8
    assert result.stats["test-fw-boom"]["rows_out"] == 6
    assert result.stats["test-fw-append-b"]["rows_in"] == 6


def test_quarantined_raw_payload_is_the_event_as_received() -> None:
    events = frame(["ID", "boom"])
    result = run(events, "owner-normalise", "test-fw-boom")
    (row,) = result.rejects.iter_rows(named=True)
    original = events.filter(pl.col("name") == "boom").row(0, named=True)
    assert (row["event_id"], row["raw"], row["origin"]) == (
        original["event_id"],
        original["raw"],
        original["origin"],
    )
    # Not the enriched row: the owner is as the producer sent it.
    assert json.loads(row["raw"])["asset"]["attributes"]["owner_users"] == [" JDoe "]


def test_hook_past_its_timeout_quarantines_the_batch_quickly() -> None:
    events = frame(["ID", "AMOUNT", "EMAIL"])
    started = time.perf_counter()
    result = run(
        events, "test-fw-append-a", {"name": "test-fw-sleepy", "timeout_s": 0.2}, "test-fw-append-b"
    )
    assert time.perf_counter() - started < 0.8
    assert_nothing_lost(events, result)
    assert result.events.is_empty()
    assert set(result.rejects.get_column("reason")) == {"hook_timeout"}
    assert set(result.rejects.get_column("detail")) == {"test-fw-sleepy: no result within 0.2 s"}


def test_timeout_met_while_isolating_failing_rows_is_still_a_timeout() -> None:
    events = frame(["ID", "boom", "slow", "AMOUNT"])
    result = run(events, {"name": "test-fw-boom-or-slow", "timeout_s": 0.2})
    assert_nothing_lost(events, result)
    assert rejected_names(result)["slow"] == "hook_timeout"


def test_hooks_that_hang_do_not_starve_every_other_hook() -> None:
    _RELEASE.clear()
    try:
        for _ in range(5):  # five batches each leave a hook call hanging
            result = run(frame(["ID"]), {"name": "test-fw-hangs", "timeout_s": 0.1})
            assert set(result.rejects.get_column("reason")) == {"hook_timeout"}
        events = frame(["ID", "AMOUNT"])
        healthy = run(events, {"name": "owner-normalise", "timeout_s": 1})
        assert healthy.rejects.is_empty(), healthy.rejects.get_column("detail").to_list()
        assert healthy.events.height == 2
    finally:
        _RELEASE.set()


@pytest.mark.parametrize(
    ("hook", "column"), [("test-fw-drop-column", "description"), ("test-fw-retype", "event_time")]
)
def test_hook_changing_the_schema_quarantines_the_batch(hook: str, column: str) -> None:
    events = frame(["ID", "AMOUNT", "EMAIL"])
    result = run(events, "test-fw-append-a", hook, "test-fw-append-b")
    assert_nothing_lost(events, result)
    assert result.events.is_empty()
    assert set(result.rejects.get_column("reason")) == {"hook_bad_output"}
    (detail,) = set(result.rejects.get_column("detail"))
    assert detail.startswith(f"{hook}: schema changed") and column in detail


def test_hook_that_fails_on_some_rows_and_changes_the_schema_of_others_passes_nothing_on() -> None:
    events = frame(["ID", "boom", "AMOUNT"])
    result = run(events, "test-fw-boom-or-drop")
    assert_nothing_lost(events, result)
    assert result.events.schema == events.schema


def test_rows_a_hook_refuses_carry_its_reason_and_detail() -> None:
    events = frame(["ID", "refuse_me", "AMOUNT", "refuse_too"])
    result = run(events, "test-fw-refuse", "test-fw-append-a")
    assert_nothing_lost(events, result)
    assert rejected_names(result) == {"refuse_me": "test_refused", "refuse_too": "test_refused"}
    assert sorted(result.rejects.get_column("detail")) == [
        "test-fw-refuse: will not take refuse_me",
        "test-fw-refuse: will not take refuse_too",
    ]
    assert result.events.get_column("description").to_list() == ["about ID+a", "about AMOUNT+a"]
    assert result.stats["test-fw-refuse"] == {
        "rows_in": 4,
        "rows_out": 2,
        "seconds": result.stats["test-fw-refuse"]["seconds"],
    }


def test_rows_refused_in_a_batch_that_also_fails_are_not_lost() -> None:
    events = frame(["ID", "refuse_me", "boom", "AMOUNT", "STATUS", "NOTE"])
    result = run(events, "test-fw-refuse-and-boom")
    assert_nothing_lost(events, result)
    assert rejected_names(result) == {"refuse_me": "test_refused", "boom": "hook_error"}
    assert result.events.get_column("name").to_list() == ["ID", "AMOUNT", "STATUS", "NOTE"]


def test_hooks_run_in_the_configured_order() -> None:
    events = frame(["ID"])
    ab = run(events, "test-fw-append-a", "test-fw-append-b")
    ba = run(events, "test-fw-append-b", "test-fw-append-a")
    assert ab.events.get_column("description").to_list() == ["about ID+a+b"]
    assert ba.events.get_column("description").to_list() == ["about ID+b+a"]
    assert list(ab.stats) == ["test-fw-append-a", "test-fw-append-b"]
    assert list(ba.stats) == ["test-fw-append-b", "test-fw-append-a"]


def test_per_hook_stats_for_every_hook_that_ran() -> None:
    events = frame(["ID", "boom", "AMOUNT", "refuse"])
    result = run(events, "owner-normalise", "test-fw-boom", "test-fw-refuse", "test-fw-append-a")
    assert list(result.stats) == [
        "owner-normalise",
        "test-fw-boom",
        "test-fw-refuse",
        "test-fw-append-a",
    ]
    flows = [(s["rows_in"], s["rows_out"]) for s in result.stats.values()]
    assert flows == [(4, 4), (4, 3), (3, 2), (2, 2)]
    assert all(s["seconds"] >= 0 for s in result.stats.values())


def test_stats_name_the_hook_whose_output_was_refused() -> None:
    events = frame(["ID", "AMOUNT"])
    result = run(events, "owner-normalise", "test-fw-drop-column")
    assert result.stats.get("test-fw-drop-column", {}).get("rows_in") == 2
    assert result.stats["test-fw-drop-column"]["rows_out"] == 0


def test_empty_batch_and_empty_chain() -> None:
    events = frame(["ID", "AMOUNT"])
    nothing = run(events.clear(), "test-fw-boom", "owner-normalise")
    assert nothing.events.is_empty() and nothing.rejects.is_empty()
    assert nothing.rejects.schema == pl.Schema(REJECT_SCHEMA)
    untouched = run_chain(events, [], HookContext(tenant="acme"))
    assert untouched.events.equals(events) and untouched.rejects.is_empty()
