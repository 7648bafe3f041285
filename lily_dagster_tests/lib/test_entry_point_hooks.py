"""A hook from a third-party package, found through the entry point group `lily_dagster.hooks`.

The package is lily_dagster_tests/fixtures/lily_test_hooks; `make test` installs it. Nothing
here imports it: only the entry point can make its hook known.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import polars as pl
import pytest

from lily_dagster.lib.envelope import decode_envelopes
from lily_dagster.lib.hooks import HookContext, get_hook, hook_names, run_chain, tenant_chain
from lily_dagster.settings import ConfigError, LilyConfigFile
from lily_dagster_tests.support.envelopes import encode, envelope

FIXTURE = "lily_dagster_tests/fixtures/lily_test_hooks"


def require_fixture_package() -> None:
    found = [ep for ep in entry_points(group="lily_dagster.hooks") if ep.name == "shout"]
    if not found:
        pytest.fail(
            "the test package lily_test_hooks is not installed: `make test` installs it "
            f"(or run: .venv/bin/pip install -e {FIXTURE})",
            pytrace=False,
        )
    assert found[0].value == "lily_test_hooks:ShoutDescription"


def events() -> pl.DataFrame:
    payloads = [
        encode(
            envelope(
                f"default/dbt/1/DB/SCH/T{i}", event_id=f"e{i}", source="dbt", attributes=attributes
            )
        )
        for i, attributes in enumerate(
            [
                {"description": "Orders of ünïcode customers", "owner_users": [" JDoe"]},
                {"owner_users": ["Alice"]},
            ]
        )
    ]
    decoded = decode_envelopes(payloads, ["o0", "o1"], tenant="acme", max_event_bytes=1 << 20)
    assert decoded.rejects.is_empty()
    return decoded.events


def test_hook_of_an_installed_package_is_found_through_its_entry_point() -> None:
    require_fixture_package()
    hook = get_hook("shout-description")
    assert hook is not None, f"not registered; known hooks: {hook_names()}"
    assert type(hook).__module__ == "lily_test_hooks"
    assert hook.stage == "pre_ingest" and hook.name == "shout-description"
    assert "shout-description" in hook_names()


def test_entry_point_hook_runs_in_a_configured_chain() -> None:
    require_fixture_package()
    config = LilyConfigFile.model_validate(
        {
            "tenants": [
                {"name": "acme", "hooks": {"pre_ingest": ["owner-normalise", "shout-description"]}}
            ]
        }
    )
    chain = tenant_chain(config, "acme", "pre_ingest")
    assert [h.name for h in chain] == ["owner-normalise", "shout-description"]
    frame = events()
    result = run_chain(frame, chain, HookContext(tenant="acme"))
    assert result.rejects.is_empty()
    assert result.events.get_column("description").to_list() == [
        "ORDERS OF ÜNÏCODE CUSTOMERS",
        None,
    ]
    assert result.events.get_column("owner_users").to_list() == [["jdoe"], ["alice"]]
    assert result.stats["shout-description"]["rows_out"] == 2


def test_entry_point_hook_settings_are_checked_at_load() -> None:
    require_fixture_package()
    config = LilyConfigFile.model_validate(
        {"hooks": {"pre_ingest": [{"name": "shout-description", "settings": {"loud": True}}]}}
    )
    with pytest.raises(
        ConfigError, match=r"^hook 'shout-description': unknown settings \['loud'\]"
    ):
        tenant_chain(config, "acme", "pre_ingest")
