"""Query parameters of the access API, checked by hand: a bad one is a 400 whose `pointer`
names it (`/query/<name>`), and an unknown one is refused rather than ignored (a typo in a
filter must not return everything)."""

from __future__ import annotations

from collections.abc import Collection

from starlette.datastructures import QueryParams

from lily_dagster.lib.receiver.errors import RequestRejectedError

MAX_LIMIT = 1000
MAX_POSITION = 2**63 - 1  # a change-log or audit position is a 64-bit integer


def bad_parameter(name: str, detail: str) -> RequestRejectedError:
    return RequestRejectedError(400, "bad_parameter", detail, pointer=f"/query/{name}")


class Query:
    def __init__(self, params: QueryParams, known: Collection[str]) -> None:
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise bad_parameter(
                unknown[0], f"unknown query parameter {unknown[0]!r}; known: {sorted(known)}"
            )
        for name in params:
            if len(params.getlist(name)) > 1:
                raise bad_parameter(name, f"{name} given more than once")
        self.params = params

    def text(self, name: str, choices: Collection[str] | None = None) -> str | None:
        value = self.params.get(name)
        if value is None:
            return None
        if not value:
            raise bad_parameter(name, f"{name} must not be empty")
        if choices is not None and value not in choices:
            raise bad_parameter(name, f"{name} must be one of {sorted(choices)}, not {value!r}")
        return value

    def integer(self, name: str, default: int, low: int, high: int | None = None) -> int:
        raw = self.params.get(name)
        if raw is None:
            return default
        if not raw.isascii() or not raw.lstrip("-").isdigit() or len(raw) > 20:
            raise bad_parameter(name, f"{name} must be an integer, not {raw!r}")
        value = int(raw)
        if value < low or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise bad_parameter(name, f"{name} must be {bounds}, not {value}")
        return value

    def position(self, name: str) -> int:
        return self.integer(name, 0, 0, MAX_POSITION)

    def limit(self) -> int:
        return self.integer("limit", 100, 1, MAX_LIMIT)
