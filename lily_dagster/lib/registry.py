"""Plug-in registries: a plug-in is one module that registers itself, like DataHub's sources.

A `Registry` finds its plug-ins in a package of this project (every module in it is
imported on first use) and in installed third-party packages through an entry point group.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str, entry_point_group: str) -> None:
        self.kind = kind
        self.package = package
        self.entry_point_group = entry_point_group
        self._items: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[type[Any]], type[Any]]:
        """Class decorator: registers one instance of the class under `name`."""

        def decorate(cls: type[Any]) -> type[Any]:
            instance = cls()
            instance.name = name
            self._items[name] = instance
            return cls

        return decorate

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{self.package}.{module.name}")
        for ep in entry_points(group=self.entry_point_group):
            ep.load()

    def get(self, name: str) -> T | None:
        self._load()
        return self._items.get(name)

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)
