"""The propagation engine on a real LocalHub and a real loopback receiver: access rules,
post-consume hooks that fail on some changes, positions and batches in flight."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from lily_dagster.lib.hooks import HookContext, register_hook
from lily_dagster.lib.hub.local import LocalHub
from lily_dagster.lib.propagation import Position, Propagator, allowed, configure_targets
from lily_dagster.settings import AccessRules, LilyConfigFile
from lily_dagster_tests.lib.targets.changes import change_frame
from lily_dagster_tests.support.envelopes import ev
from lily_dagster_tests.support.frames import frame
from lily_dagster_tests.support.receivers import RecordingReceiver

SCH = "default/snowflake/1700000000/DB/SCH"


@register_hook("test-post-refuse-secret")
class RefuseSecret:
    """A post-consume hook that fails on changes named SECRET*."""

    stage = "post_consume"

    def configure(self, settings: dict[str, Any]) -> None:
        return None

    def apply(self, changes: pl.DataFrame, config: None, ctx: HookContext) -> pl.DataFrame:
        if changes.filter(pl.col("name").str.starts_with("SECRET")).height:
            raise ValueError("will not send secrets")
        return changes


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        (AccessRules(), [True, True, True, True]),
        (AccessRules(public=True), [True, False, False, True]),
        (AccessRules(deny_classifications=["Finance*"]), [True, True, True, False]),
        (AccessRules(allow_types=["Col*"]), [False, True, True, False]),
        (AccessRules(deny_types=["Table"]), [False, True, True, True]),
    ],
)
def test_access_rules_by_classification_and_type(rules: AccessRules, expected: list[bool]) -> None:
    changes = change_frame(
        [
            {"qualified_name": f"{SCH}/T", "type_name": "Table"},
            {"qualified_name": f"{SCH}/T/EMAIL", "type_name": "Column", "classifications": ["PII"]},
            {"qualified_name": f"{SCH}/T/ID", "type_name": "Column",
             "classifications": ["GDPR:personal-data"]},
            {"qualified_name": f"{SCH}/V", "type_name": "View", "classifications": ["Finance:x"]},
        ]
    )  # fmt: skip
    assert allowed(changes, rules).to_list() == expected


def setup(tmp_path: Path, receiver: RecordingReceiver, **target: Any) -> tuple[Propagator, Any]:
    config = LilyConfigFile.model_validate(
        {
            "tenants": [{"name": "acme"}],
            "targets": [{"name": "hook", "type": "webhook", "url": receiver.url,
                         "secret_env": "PROP_TEST_SECRET", "backoff_s": 0, **target}],
        }
    )  # fmt: skip
    (configured,) = configure_targets(config, "acme")
    hub = LocalHub(tmp_path / "hub")
    return Propagator(
        hub, tmp_path / "positions", tmp_path / "dlq", sleep=lambda s: None
    ), configured


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROP_TEST_SECRET", "k" * 32)


def test_a_failing_post_consume_hook_dead_letters_only_its_changes(tmp_path: Path) -> None:
    with RecordingReceiver() as receiver:
        propagator, target = setup(
            tmp_path, receiver, hooks=["test-post-refuse-secret"], batch_size=10
        )
        propagator.hub.upsert(
            "acme",
            frame([ev(f"e{i}", f"{SCH}/{n}", i) for i, n in enumerate(["A", "SECRET", "B"])]),
        )
        result = propagator.dispatch("acme", target)
        assert (result.delivered, result.dead_lettered) == (2, 1)
        sent = [c["name"] for c in receiver.requests[0].json()["changes"]]
        assert sent == ["A", "B"]
        (entry,) = propagator.dlq("hook").read("acme").to_dicts()
        assert entry["reason"] == "hook_error" and "will not send secrets" in entry["detail"]
        assert json.loads(entry["raw"])["name"] == "SECRET"


def test_batches_in_order_and_a_batch_in_flight_is_resent_identically(tmp_path: Path) -> None:
    with RecordingReceiver() as receiver:
        propagator, target = setup(tmp_path, receiver, batch_size=2, max_attempts=1)
        propagator.hub.upsert("acme", frame([ev(f"e{i}", f"{SCH}/T{i}", i) for i in range(5)]))
        receiver.script([200, 503])  # the second batch fails
        first = propagator.dispatch("acme", target)
        assert first.error and first.position == 2
        assert propagator.position("acme", "hook") == Position(2, (3, 4))
        # New changes arrive meanwhile; the batch in flight is sent again as it was.
        propagator.hub.upsert("acme", frame([ev("late", f"{SCH}/LATE", 9)]))
        second = propagator.dispatch("acme", target)
        assert second.error is None and second.position == 6
        keys = [r.header("Idempotency-Key") for r in receiver.requests]
        assert keys[1] == keys[2] and len(set(keys)) == 3  # (1,2), (3,4) twice, (5,6)
        assert receiver.requests[1].body == receiver.requests[2].body
        seqs = [c["version"] for r in receiver.requests[2:] for c in r.json()["changes"]]
        assert len(seqs) == 4  # T3, T4, then the two remaining changes
