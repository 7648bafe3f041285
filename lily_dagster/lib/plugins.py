"""The plug-in registry: hooks, targets, pollers, webhook vendors and hubs are each one
module that registers itself, like DataHub's sources.

A plug-in is a class decorated with its registry's `register(name)`. It declares its
options as a pydantic model, `Options` (a `PluginOptions`: unknown keys are refused; every
field has a description, which `tools/gen_docs.py` turns into docs/reference/plugins.md).
A registry finds its plug-ins in a package of this project (every module in it is imported
on first use) and in installed third-party packages through an entry point group. A module
that fails to import is reported by name, with its error, when a plug-in is looked up; it
does not take the other plug-ins down with it.

Options are validated in one place, `validate_options`, with one error format:
`<kind> '<name>': <field>: <problem>`.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from lily_dagster.settings import ConfigError

T = TypeVar("T")
PluginOptionsT = TypeVar("PluginOptionsT", bound="PluginOptions")
log = logging.getLogger(__name__)


class PluginOptions(BaseModel):
    """Base of every plug-in's options model: unknown keys are a configuration error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoOptions(PluginOptions):
    """A plug-in that takes no options."""


def options_model(plugin: Any) -> type[PluginOptions]:
    model = getattr(plugin, "Options", NoOptions)
    if not (isinstance(model, type) and issubclass(model, PluginOptions)):
        raise TypeError(f"{type(plugin).__name__}.Options must be a PluginOptions subclass")
    return model


def _problem(error: Mapping[str, Any]) -> str:
    field = ".".join(str(p) for p in error["loc"]) or "options"
    kind = error["type"]
    if kind == "literal_error":
        return f"{field} must be one of {error.get('ctx', {}).get('expected', '')}"
    if kind == "bool_type" or kind == "bool_parsing":
        return f"{field} must be true or false, got {error.get('input')!r}"
    if kind == "missing":
        return f"{field} is required"
    if kind == "extra_forbidden":
        return (
            f"{'.'.join(str(p) for p in error['loc'][:-1])}: unknown setting {error['loc'][-1]!r}"
        )
    message = str(error["msg"])
    if kind.startswith("value_error"):
        message = message.removeprefix("Value error, ")
    return f"{field}: {message}"


def parse_options(model: type[PluginOptionsT], raw: Any) -> PluginOptionsT:
    """`raw` (a mapping from LILY_CONFIG or the environment) as `model`, or a ConfigError
    whose one-line message names the field and the problem. The one place options are
    validated."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"options must be a mapping, got {raw!r}")
    try:
        return model.model_validate(dict(raw))
    except ValidationError as exc:
        errors = exc.errors()
        top_level = [e for e in errors if e["type"] == "extra_forbidden" and len(e["loc"]) == 1]
        if top_level:
            unknown = sorted(str(e["loc"][0]) for e in top_level)
            known = sorted(model.model_fields)
            raise ConfigError(f"unknown settings {unknown}; known: {known}") from None
        raise ConfigError(_problem(errors[0])) from None


def validate_options(kind: str, name: str, model: type[PluginOptionsT], raw: Any) -> PluginOptionsT:
    """`parse_options`, its message prefixed with `<kind> '<name>': `."""
    try:
        return parse_options(model, raw)
    except ConfigError as exc:
        raise ConfigError(f"{kind} {name!r}: {exc}") from None


class PluginRegistry(Generic[T]):
    """The plug-ins of one kind, by name."""

    def __init__(
        self, kind: str, package: str, entry_point_group: str, instantiate: bool = True
    ) -> None:
        self.kind = kind
        self.instantiate = instantiate  # False: the class itself is the plug-in (hubs)
        self.package = package
        self.entry_point_group = entry_point_group
        self._items: dict[str, T] = {}
        self._broken: dict[str, str] = {}  # module or entry point → its import error
        self._loaded = False

    def register(self, name: str) -> Callable[[type[Any]], type[Any]]:
        """Class decorator: registers the class (or one instance of it) under `name`."""

        def decorate(cls: type[Any]) -> type[Any]:
            instance: Any = cls() if self.instantiate else cls
            instance.name = name
            options_model(instance)  # a wrong Options fails at import, naming the class
            self._items[name] = instance
            return cls

        return decorate

    def _import(self, where: str, load: Callable[[], Any]) -> None:
        try:
            load()
        except Exception as exc:
            self._broken[where] = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            log.warning("%s plug-in %s failed to import: %s", self.kind, where, self._broken[where])

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__):
            qualified = f"{self.package}.{module.name}"
            self._import(qualified, lambda q=qualified: importlib.import_module(q))  # type: ignore[misc]
        for ep in entry_points(group=self.entry_point_group):
            self._import(f"{ep.name} ({ep.value})", ep.load)

    def find(self, name: str) -> T | None:
        self._load()
        return self._items.get(name)

    def get(self, name: str) -> T:
        """The plug-in, or ConfigError naming the known ones and any that failed to import."""
        found = self.find(name)
        if found is not None:
            return found
        message = f"unknown {self.kind} {name!r}; known: {self.names()}"
        if self._broken:
            failed = "; ".join(f"{where}: {error}" for where, error in self._broken.items())
            message += f"; failed to import: {failed}"
        raise ConfigError(message)

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def broken(self) -> dict[str, str]:
        """Plug-in modules that failed to import, with their errors."""
        self._load()
        return dict(self._broken)

    def options(self, name: str, raw: Any) -> Any:
        """The plug-in's options from `raw`, validated (ConfigError in the one format)."""
        return validate_options(self.kind, name, options_model(self.get(name)), raw)

    def plugins(self) -> dict[str, T]:
        self._load()
        return dict(self._items)


REGISTRIES: dict[str, PluginRegistry[Any]] = {}


def registry(
    kind: str, package: str, entry_point_group: str, instantiate: bool = True
) -> PluginRegistry[Any]:
    """The registry of one kind of plug-in (made once; `REGISTRIES` lists them for docs)."""
    if kind not in REGISTRIES:
        REGISTRIES[kind] = PluginRegistry(kind, package, entry_point_group, instantiate)
    return REGISTRIES[kind]


__all__ = [
    "REGISTRIES",
    "NoOptions",
    "PluginOptions",
    "PluginRegistry",
    "options_model",
    "parse_options",
    "registry",
    "validate_options",
]
