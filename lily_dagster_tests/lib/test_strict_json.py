"""RFC 8259 JSON in and out: NaN, Infinity and -Infinity are found where they are, and no
export writes them, not even from a hub an earlier release let one into."""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest

from lily_dagster.cli import main
from lily_dagster.lib import strict_json
from lily_dagster.lib.hub.local import LocalHub
from lily_dagster.lib.strict_json import NotJSONError
from lily_dagster_tests.support.envelopes import ev
from lily_dagster_tests.support.frames import frame


def strict(text: str) -> object:
    """json.loads as a strict parser reads it: NaN and infinities refused."""

    def refuse(token: str) -> None:
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize(
    ("text", "token", "pointer"),
    [
        ("NaN", "NaN", ""),
        ('{"a": [1, {"b": -Infinity}]}', "-Infinity", "/a/1/b"),
        ('[{"x/y": 1e999}]', "1e999", "/0/x~1y"),
        ('{"a": Infinity, "b": NaN}', "Infinity", "/a"),  # the first in the text
        ('{"a": NaN, "a": 1}', "NaN", ""),  # replaced by a later key: still not JSON
    ],
)
def test_loads_names_the_first_value_that_is_not_json(text: str, token: str, pointer: str) -> None:
    with pytest.raises(NotJSONError) as caught:
        strict_json.loads(text)
    assert (caught.value.token, caught.value.pointer) == (token, pointer)


def test_loads_reads_json_as_json_loads_does() -> None:
    text = '{"a": "NaN", "b": [1.5, -0.0, 1e308], "c": null}'
    assert strict_json.loads(text) == json.loads(text)
    assert strict_json.loads("1e999", check_numbers=False) == math.inf
    with pytest.raises(json.JSONDecodeError):
        strict_json.loads('{"a": NaN,')


def test_dumps_refuses_nan() -> None:
    with pytest.raises(ValueError):
        strict_json.dumps({"a": math.nan})
    assert strict_json.dumps({"a": 1.5}) == '{"a": 1.5}'


def test_hub_export_is_strict_json_even_for_a_nan_of_an_earlier_release(
    lily_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = frame([ev("e1", "default/snowflake/1/DB", 0, attributes={"score": 1.5})])
    # What an earlier release stored for {"score": NaN, "rows": [Infinity]}.
    legacy = events.with_columns(pl.lit('{"rows":[Infinity],"score":NaN}').alias("attributes"))
    LocalHub(lily_home / "hub").upsert("acme", legacy)
    capsys.readouterr()
    assert main(["hub", "export", "--tenant", "acme"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    record = strict(line)
    assert isinstance(record, dict)
    assert record["attributes"] == {"rows": [None], "score": None}


def test_outbound_changes_of_an_earlier_release_nan_are_json() -> None:
    from lily_dagster.lib.targets import change_objects

    changes = pl.DataFrame({"raw": ['{"qualified_name":"q","attributes":{"x":NaN,"y":1}}']})
    (change,) = change_objects(changes)
    assert change == {"qualified_name": "q", "attributes": {"x": None, "y": 1}}
    assert strict(strict_json.dumps(change))
