"""RFC 8259 JSON in and out.

Python's json module (and pydantic's parser) read `NaN`, `Infinity` and `-Infinity`, which
are not JSON, and read a number beyond a 64-bit float's range (`1e999`) as an infinity;
json.dumps writes such floats back as those same non-JSON tokens. Lily refuses them where
payloads come in (as `malformed_json`) and writes every export with `allow_nan=False`.
"""

from __future__ import annotations

import json
import math
from typing import Any


class NotJSONError(ValueError):
    """A value that is not RFC 8259 JSON: a NaN or infinity constant, or a number out of
    a 64-bit float's range (`token` its text, empty when unknown); `path` says where (object
    keys and array indexes)."""

    def __init__(self, token: str, path: tuple[str | int, ...]) -> None:
        self.token = token
        self.path = path
        super().__init__(f"{self.where}: {self.reason}")

    @property
    def where(self) -> str:
        """The path as pydantic words locations (`asset.attributes.x`), `body` at the root."""
        return ".".join(str(p) for p in self.path) or "body"

    @property
    def pointer(self) -> str:
        """The path as a JSON pointer (RFC 6901)."""
        return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in self.path)

    @property
    def reason(self) -> str:
        if self.token in ("NaN", "Infinity", "-Infinity"):
            return f"Invalid JSON: {self.token} is not a JSON value (RFC 8259)"
        number = f"number {self.token[:40]}" if self.token else "a number"
        return f"Invalid JSON: {number} is out of the range of a 64-bit float"


class _Bad:
    """Where a non-JSON value was read; replaced by NotJSONError once found."""

    __slots__ = ("token",)

    def __init__(self, token: str) -> None:
        self.token = token


def may_hold_constant(text: str | bytes) -> bool:
    """Whether `text` may hold a NaN or infinity constant (a quick look, no parse)."""
    if isinstance(text, bytes):
        return b"NaN" in text or b"Infinity" in text
    return "NaN" in text or "Infinity" in text


def loads(text: str | bytes, *, check_numbers: bool = True) -> Any:
    """json.loads that raises NotJSONError, naming the first place, for a NaN or infinity
    constant and (`check_numbers`) for a number out of a 64-bit float's range. Other
    invalid JSON raises json.JSONDecodeError (a ValueError) as json.loads does."""
    bad: list[_Bad] = []

    def constant(token: str) -> _Bad:
        bad.append(_Bad(token))
        return bad[-1]

    def number(token: str) -> float | _Bad:
        value = float(token)
        if math.isinf(value):
            bad.append(_Bad(token))
            return bad[-1]
        return value

    value = json.loads(text, parse_constant=constant, parse_float=number if check_numbers else None)
    if bad:
        found = _path_of(value, ())  # None: a duplicate key replaced it; still not JSON
        if found is None:
            raise NotJSONError(bad[0].token, ())
        raise NotJSONError(found[1].token, found[0])
    return value


def _path_of(value: Any, path: tuple[str | int, ...]) -> tuple[tuple[str | int, ...], _Bad] | None:
    """The first _Bad in document order and its path."""
    if isinstance(value, _Bad):
        return path, value
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _path_of(item, (*path, key))
        if found is not None:
            return found
    return None


def non_finite_path(value: Any, path: tuple[str | int, ...] = ()) -> tuple[str | int, ...] | None:
    """Where the first NaN or infinite float in a decoded value is, or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = non_finite_path(item, (*path, key))
        if found is not None:
            return found
    return None


def finite_loads(text: str) -> Any:
    """json.loads of text Lily stored itself, where an earlier release may have left a NaN
    or an infinity: those read as null, so what is written from it stays JSON."""
    return json.loads(text, parse_constant=_null)


def _null(_: str) -> None:
    return None


def dumps(value: Any, **kwargs: Any) -> str:
    """json.dumps that writes RFC 8259 JSON only (a NaN or an infinity raises ValueError)."""
    return json.dumps(value, allow_nan=False, **kwargs)
