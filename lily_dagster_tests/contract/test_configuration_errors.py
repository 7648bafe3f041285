"""CONTRACT.md §2-§3: "every command exits non-zero with a one-line error on bad
configuration". Plug-in options in LILY_CONFIG (hooks, targets, pollers) and numeric
settings in the environment are checked before anything starts, and the one line names
what is wrong and where."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lily_dagster_tests.contract import outside

BAD_CONFIGS = {
    "hook-unknown-setting": (
        "tenants: [{name: acme, hooks: {pre_ingest: [{name: pii-classify, "
        "settings: {colour: red}}]}}]",
        ["hook 'pii-classify'", "unknown settings ['colour']", "kinds"],
    ),
    "hook-wrong-type": (
        "tenants: [{name: acme, hooks: {pre_ingest: [{name: pii-classify, "
        "settings: {kinds: email}}]}}]",
        ["hook 'pii-classify'", "kinds"],
    ),
    "hook-unknown-kind": (
        "tenants: [{name: acme, hooks: {pre_ingest: [{name: pii-mask, "
        "settings: {kinds: [shoe_size]}}]}}]",
        ["hook 'pii-mask'", "shoe_size"],
    ),
    "hook-typo": (
        "hooks: {pre_ingest: [pii-clasify]}",
        ["'pii-clasify'", "pii-classify"],
    ),
    "target-unknown-option": (
        "targets: [{name: audit, type: webhook, url: 'http://127.0.0.1:9/x', "
        "secret_env: HOME, colour: red}]",
        ["target 'audit'", "colour"],
    ),
    "target-out-of-range": (
        "targets: [{name: chat, type: slack, url: 'https://hooks.example/x', max_shown: 0}]",
        ["target 'chat'", "max_shown"],
    ),
    "poller-missing-option": (
        "tenants: [{name: acme, pollers: {monte-carlo: {token_env: HOME}}}]",
        ["tenant 'acme'", "poller 'monte-carlo'", "id_env is required"],
    ),
    "poller-unknown": (
        "tenants: [{name: acme, pollers: {monte-carol: {}}}]",
        ["'monte-carol'", "monte-carlo"],
    ),
}


def one_line_error(proc: outside.subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, proc.stdout[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_plugin_options_fail_at_start_with_one_line(case: str, tmp_path: Path) -> None:
    config_yaml, expected = BAD_CONFIGS[case]
    config = tmp_path / "lily.yaml"
    config.write_text(config_yaml + "\n")
    env = outside.clean_environment(LILY_HOME=str(tmp_path / "home"), LILY_CONFIG=str(config))
    started = time.monotonic()
    proc = outside.lily("run", "--until-idle", env=env, timeout=60)
    line = one_line_error(proc)
    for part in expected:
        assert part in line, line
    # Nothing was started: the error comes before any broker or daemon.
    assert time.monotonic() - started < 30
    assert not (tmp_path / "home" / "dagster").exists()


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("LILY_BACKFILL_SHARDS", "many", "LILY_BACKFILL_SHARDS='many' is not an integer"),
        ("LILY_BACKFILL_SHARDS", "0", "LILY_BACKFILL_SHARDS=0 must be at least 1"),
        ("LILY_BROKER_STORAGE", "sqlite://x", "LILY_BROKER_STORAGE='sqlite://x'"),
        ("LILY_RUN_RETENTION_DAYS", "-1", "LILY_RUN_RETENTION_DAYS=-1"),
    ],
)
def test_bad_settings_fail_with_one_line(
    variable: str, value: str, expected: str, tmp_path: Path
) -> None:
    env = outside.clean_environment(LILY_HOME=str(tmp_path), **{variable: value})
    line = one_line_error(outside.lily("hub", "export", "--tenant", "acme", env=env))
    assert expected in line, line


def test_a_bad_setting_stops_run_until_idle_before_it_starts(tmp_path: Path) -> None:
    env = outside.clean_environment(LILY_HOME=str(tmp_path), LILY_BACKFILL_SHARDS="many")
    line = one_line_error(outside.lily("run", "--until-idle", env=env, timeout=60))
    assert "LILY_BACKFILL_SHARDS='many' is not an integer" in line, line
    assert not (tmp_path / "dagster").exists()


def test_bad_atlan_pacing_fails_with_one_line_naming_it(tmp_path: Path) -> None:
    env = outside.clean_environment(
        LILY_HOME=str(tmp_path),
        LILY_HUB="atlan",
        ATLAN_BASE_URL="http://127.0.0.1:9",
        ATLAN_API_KEY="k",
        LILY_ATLAN_BULK_SIZE="0",
    )
    line = one_line_error(outside.lily("hub", "export", "--tenant", "acme", env=env))
    assert "LILY_ATLAN_BULK_SIZE" in line and "between 1 and 500" in line, line
