"""The plug-in registry: plug-ins found by package, options validated in one place with one
error format, and a plug-in module that fails to import reported, not fatal."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from lily_dagster.lib.plugins import PluginOptions, PluginRegistry, validate_options
from lily_dagster.settings import ConfigError


@pytest.fixture
def plugin_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A package of plug-ins: `good.py` registers `good`, `broken.py` fails to import."""
    name = f"lily_test_plugins_{tmp_path.name.replace('-', '_')}"
    package = tmp_path / name
    package.mkdir()
    (package / "__init__.py").write_text(
        "from lily_dagster.lib.plugins import PluginRegistry\n"
        f"REGISTRY = PluginRegistry('widget', {name!r}, 'lily_test_no_such_group')\n"
    )
    (package / "good.py").write_text(
        textwrap.dedent(
            f"""
            from lily_dagster.lib.plugins import PluginOptions
            from {name} import REGISTRY

            @REGISTRY.register("good")
            class Good:
                class Options(PluginOptions):
                    size: int = 1
            """
        )
    )
    (package / "broken.py").write_text("import lily_no_such_module_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    for module in [m for m in sys.modules if m.startswith(name)]:
        del sys.modules[module]


def registry_of(package: str) -> PluginRegistry[object]:
    module = __import__(package)
    registry: PluginRegistry[object] = module.REGISTRY
    return registry


def test_a_module_that_fails_to_import_is_reported_and_the_others_work(
    plugin_package: str,
) -> None:
    registry = registry_of(plugin_package)
    assert registry.names() == ["good"]
    assert registry.options("good", {"size": 3}).size == 3
    assert list(registry.broken()) == [f"{plugin_package}.broken"]
    with pytest.raises(ConfigError) as info:
        registry.get("broken")
    message = str(info.value)
    assert "\n" not in message
    assert "unknown widget 'broken'; known: ['good']" in message
    assert f"failed to import: {plugin_package}.broken: ModuleNotFoundError" in message


class Shape(PluginOptions):
    """A nested option model."""

    sides: int = Field(ge=3)


class Widget(PluginOptions):
    colour: Literal["red", "blue"] = "red"
    shiny: bool = False
    name: str
    shapes: list[Shape] = Field(default_factory=list)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"name": "w", "size": 2}, "widget 'w1': unknown settings ['size']; known: ['colour', "),
        ({"name": "w", "colour": "green"}, "widget 'w1': colour must be one of 'red' or 'blue'"),
        ({"name": "w", "shiny": "maybe"}, "widget 'w1': shiny must be true or false, got 'maybe'"),
        ({}, "widget 'w1': name is required"),
        ({"name": "w", "shapes": [{"sides": 2}]}, "widget 'w1': shapes.0.sides: Input should be"),
        ({"name": "w", "shapes": [{"sides": 3, "x": 1}]}, "shapes.0: unknown setting 'x'"),
        ("name: w", "widget 'w1': options must be a mapping, got 'name: w'"),
    ],
)
def test_options_errors_have_one_format(raw: object, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_options("widget", "w1", Widget, raw)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_valid_options_are_typed_and_frozen() -> None:
    options = validate_options("widget", "w1", Widget, {"name": "w", "shapes": [{"sides": 4}]})
    assert options.shapes[0].sides == 4 and options.colour == "red"
    with pytest.raises(ValueError):
        options.name = "other"  # type: ignore[misc]


def test_an_options_model_that_is_not_plugin_options_fails_at_registration() -> None:
    registry: PluginRegistry[object] = PluginRegistry("widget", "lily_dagster.lib", "x")

    class Loose(BaseModel):
        pass

    with pytest.raises(TypeError, match="Options must be a PluginOptions subclass"):

        @registry.register("loose")
        class LoosePlugin:
            Options = Loose
