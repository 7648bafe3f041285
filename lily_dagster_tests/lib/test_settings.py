"""Settings.from_env and the LILY_CONFIG file: defaults, and one-line ConfigErrors."""

from __future__ import annotations

from pathlib import Path

import pytest

from lily_dagster.settings import (
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_TOPIC,
    ConfigError,
    Settings,
    validate_tenant,
)

VARIABLES = (
    "LILY_HOME",
    "LILY_HUB",
    "LILY_KAFKA_TOPICS",
    "LILY_KAFKA_BOOTSTRAP",
    "LILY_CONFIG",
    "LILY_MAX_EVENT_BYTES",
    "LILY_MAX_BATCH_EVENTS",
    "ATLAN_BASE_URL",
    "ATLAN_API_KEY",
)


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No Lily variables set; the working directory is an empty temporary one."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def config_error(match: str | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        Settings.from_env().topic_bindings()
    message = str(info.value)
    assert message
    assert "\n" not in message, message
    if match is not None:
        assert match in message, message
    return info.value


def write_config(path: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    path.write_text(text)
    monkeypatch.setenv("LILY_CONFIG", str(path))
    return path


def test_defaults(clean_env: Path) -> None:
    settings = Settings.from_env()
    assert settings.home == (clean_env / ".lily").resolve()
    assert settings.kafka_topics == (DEFAULT_TOPIC,)
    assert settings.hub == "local"
    assert settings.config_path is None
    assert settings.max_event_bytes == DEFAULT_MAX_EVENT_BYTES == 1_048_576
    assert settings.topic_bindings() == {}
    assert settings.hub_dir == settings.home / "hub"
    assert settings.staging_dir == settings.home / "staging"
    assert settings.quarantine_dir == settings.home / "quarantine"


def test_values_from_environment(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LILY_HOME", str(clean_env / "state"))
    monkeypatch.setenv("LILY_KAFKA_TOPICS", " a.events , b_events,c-events ,")
    monkeypatch.setenv("LILY_MAX_EVENT_BYTES", "2048")
    monkeypatch.setenv("LILY_HUB", "atlan")
    monkeypatch.setenv("ATLAN_BASE_URL", "https://example.atlan.com")
    monkeypatch.setenv("ATLAN_API_KEY", "k")
    settings = Settings.from_env()
    assert settings.home == clean_env / "state"
    assert settings.kafka_topics == ("a.events", "b_events", "c-events")
    assert settings.max_event_bytes == 2048
    assert settings.hub == "atlan"


def test_empty_variables_mean_defaults(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.setenv(name, "")
    settings = Settings.from_env()
    assert settings.hub == "local"
    assert settings.kafka_topics == (DEFAULT_TOPIC,)
    assert settings.max_event_bytes == DEFAULT_MAX_EVENT_BYTES
    assert settings.config_path is None


@pytest.mark.parametrize(
    ("variable", "value", "match"),
    [
        ("LILY_HUB", "atlas", "LILY_HUB"),
        ("LILY_HUB", "LOCAL", "LILY_HUB"),
        ("LILY_HUB", "atlan", "LILY_HUB=atlan needs ATLAN_BASE_URL"),
        ("LILY_KAFKA_TOPICS", " , ,", "LILY_KAFKA_TOPICS"),
        ("LILY_KAFKA_TOPICS", "good,bad topic", "bad topic"),
        ("LILY_KAFKA_TOPICS", "t" * 250, "LILY_KAFKA_TOPICS"),
        ("LILY_KAFKA_TOPICS", "caf\u00e9", "LILY_KAFKA_TOPICS"),
        ("LILY_MAX_EVENT_BYTES", "1MB", "LILY_MAX_EVENT_BYTES"),
        ("LILY_MAX_EVENT_BYTES", "1.5", "LILY_MAX_EVENT_BYTES"),
        ("LILY_MAX_EVENT_BYTES", "0", "LILY_MAX_EVENT_BYTES"),
        ("LILY_MAX_EVENT_BYTES", "-1", "LILY_MAX_EVENT_BYTES"),
        ("LILY_MAX_EVENT_BYTES", "12\n34", "LILY_MAX_EVENT_BYTES"),
        ("LILY_CONFIG", "does-not-exist.yaml", "LILY_CONFIG"),
    ],
)
def test_bad_value_is_a_one_line_config_error(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, match: str
) -> None:
    monkeypatch.setenv(variable, value)
    config_error(match)


def test_atlan_needs_only_the_missing_variable(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LILY_HUB", "atlan")
    monkeypatch.setenv("ATLAN_BASE_URL", "https://example.atlan.com")
    exc = config_error("ATLAN_API_KEY")
    assert "ATLAN_BASE_URL" not in str(exc)


def test_config_directory_is_not_a_file(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LILY_CONFIG", str(clean_env))
    config_error("LILY_CONFIG")


CONFIG = """\
tenants:
  - name: acme
    kafka_topics: [acme.events, acme.lineage]
  - name: globex
    kafka_topics:
      - globex.events
  - name: initech
"""


def test_config_file_topic_bindings(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(clean_env / "lily.yaml", CONFIG, monkeypatch)
    settings = Settings.from_env()
    assert settings.config_path == path.resolve()
    assert [t.name for t in settings.config.tenants] == ["acme", "globex", "initech"]
    assert settings.topic_bindings() == {
        "acme.events": "acme",
        "acme.lineage": "acme",
        "globex.events": "globex",
    }


def test_config_file_found_in_lily_home(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = clean_env / "home"
    home.mkdir()
    (home / "lily.yaml").write_text(CONFIG)
    monkeypatch.setenv("LILY_HOME", str(home))
    settings = Settings.from_env()
    assert settings.config_path == home / "lily.yaml"
    assert settings.topic_bindings()["globex.events"] == "globex"


def test_empty_config_file(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(clean_env / "lily.yaml", "", monkeypatch)
    assert Settings.from_env().topic_bindings() == {}


def test_same_topic_twice_for_one_tenant_is_fine(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "tenants:\n  - name: acme\n    kafka_topics: [a, a]\n"
    write_config(clean_env / "lily.yaml", text, monkeypatch)
    assert Settings.from_env().topic_bindings() == {"a": "acme"}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("tenants: []\nkafka_topic: [x]\n", "kafka_topic"),  # unknown top-level key
        ("tenants:\n  - name: acme\n    topics: [x]\n", "topics"),  # unknown tenant key
        ("tenants:\n  - name: acme\n    kafka_topics: x\n", "kafka_topics"),
        ("tenants:\n  - kafka_topics: [x]\n", "name"),
        ("tenants: acme\n", "tenants"),
        ("- acme\n- globex\n", "mapping"),
        ("tenants: [\n  - name: acme\n", "invalid YAML"),
        ("tenants:\n  - name: acme\n\tkafka_topics: [x]\n", "invalid YAML"),
        (
            "tenants:\n  - name: acme\n    kafka_topics: [t]\n  - name: globex\n"
            "    kafka_topics: [u, t]\n",
            "'t'",
        ),
    ],
    ids=[
        "unknown-key",
        "unknown-tenant-key",
        "topics-not-a-list",
        "tenant-without-name",
        "tenants-not-a-list",
        "not-a-mapping",
        "invalid-yaml",
        "tab-indent",
        "topic-bound-twice",
    ],
)
def test_bad_config_file(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, text: str, match: str
) -> None:
    write_config(clean_env / "lily.yaml", text, monkeypatch)
    config_error(match)


@pytest.mark.parametrize(
    "name",
    ["Acme", "-acme", "acme_corp", "ac me", "a" * 64, "", "acme\n"],
    ids=["upper", "leading-dash", "underscore", "space", "64-chars", "empty", "trailing-newline"],
)
def test_bad_tenant_name_in_config_file(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    # a double-quoted YAML scalar with Python-style escapes spells every name exactly
    quoted = '"' + name.replace("\n", "\\n") + '"'
    text = f"tenants:\n  - name: {quoted}\n    kafka_topics: [t]\n"
    write_config(clean_env / "lily.yaml", text, monkeypatch)
    config_error("tenant name")


@pytest.mark.parametrize("name", ["acme", "a", "0", "a" * 63, "acme-corp-2"])
def test_validate_tenant_accepts(name: str) -> None:
    assert validate_tenant(name) == name


@pytest.mark.parametrize(
    "name",
    ["Acme", "-acme", "a" * 64, "", "acme\n", "acme/../x"],
    ids=["upper", "leading-dash", "64-chars", "empty", "trailing-newline", "path"],
)
def test_validate_tenant_rejects(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_tenant(name)
    assert "\n" not in str(info.value)
