"""Access policies (ABAC, CONTRACT.md §6): which records a caller may see.

A policy is compiled into one polars expression over a records frame (`qualified_name`,
`type_name`, `classifications`), evaluated inside the scan that answers the request, so a
deny on a prefix never materialises the rows it hides.

Written here rather than with pycasbin: casbin decides one (subject, object, action) at a
time in Python, which would mean filtering a listing row by row after reading it; the rules
of §6 are five fields wide and compile directly into the query.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

_FIELDS = ("name", "effect", "groups", "qualified_name", "type_names", "classifications")


class AccessPolicy(BaseModel):
    """One `access.policies` entry of the LILY_CONFIG file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Named in errors and in documentation.")
    effect: Literal["deny", "allow"]
    groups: tuple[str, ...] | None = Field(
        default=None, description="The token's `groups` claim, any of; omitted: everyone."
    )
    qualified_name: str | None = Field(
        default=None, description="Regular expression, searched in the qualified name."
    )
    type_names: tuple[str, ...] | None = None
    classifications: tuple[str, ...] | None = Field(default=None, description="Any of.")

    @model_validator(mode="before")
    @classmethod
    def _named_errors(cls, data: Any) -> Any:
        """Every problem names the policy: pydantic's own errors would only give its index."""
        if not isinstance(data, dict):
            raise ValueError("a policy must be a mapping")
        name = data.get("name")
        label = f"policy {name!r}" if isinstance(name, str) and name else "a policy without name"
        unknown = sorted(str(k) for k in data if k not in _FIELDS)
        if unknown:
            raise ValueError(f"{label}: unknown field(s) {unknown}; known: {list(_FIELDS)}")
        if data.get("effect") not in ("deny", "allow"):
            raise ValueError(f"{label}: effect must be deny or allow, not {data.get('effect')!r}")
        for key in ("groups", "type_names", "classifications"):
            value = data.get(key)
            if value is not None and not (
                isinstance(value, list) and all(isinstance(v, str) for v in value)
            ):
                raise ValueError(f"{label}: {key} must be a list of strings")
        pattern = data.get("qualified_name")
        if pattern is not None:
            problem = regex_problem(pattern)
            if problem:
                raise ValueError(f"{label}: qualified_name {pattern!r}: {problem}")
        return data

    def applies_to(self, groups: Iterable[str]) -> bool:
        return self.groups is None or not set(self.groups).isdisjoint(groups)

    def matches_record(self, qualified_name: str, type_name: str | None, tags: Any) -> bool:
        """`matches` for one record, in Python (a point lookup; no frame to filter)."""
        if self.qualified_name is not None and not _compiled(self.qualified_name).search(
            qualified_name
        ):
            return False
        if self.type_names is not None and type_name not in self.type_names:
            return False
        return self.classifications is None or not set(self.classifications).isdisjoint(tags or ())

    def matches(self) -> pl.Expr:
        """The records this policy matches, as an expression (true where it matches)."""
        conditions = [pl.lit(True)]
        if self.qualified_name is not None:
            conditions.append(pl.col("qualified_name").str.contains(self.qualified_name))
        if self.type_names is not None:
            conditions.append(pl.col("type_name").is_in(list(self.type_names)))
        if self.classifications is not None:
            wanted = pl.lit(list(self.classifications), dtype=pl.List(pl.String))
            conditions.append(
                pl.col("classifications").fill_null([]).list.set_intersection(wanted).list.len() > 0
            )
        return pl.all_horizontal(conditions)


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def regex_problem(pattern: Any) -> str | None:
    """Why `pattern` cannot be a policy's regex (None: it can). It must mean the same to
    Python's `re` and to polars (Rust's regex: no look-around or back-references)."""
    if not isinstance(pattern, str) or not pattern:
        return "must be a non-empty string"
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"bad regular expression: {exc}"
    try:
        pl.select(pl.lit("").str.contains(pattern))
    except pl.exceptions.PolarsError as exc:
        lines = [ln.removeprefix("error: ") for ln in str(exc).splitlines()]
        reason = next((ln for ln in lines if "not supported" in ln), lines[0] if lines else "")
        return f"regular expression not supported by the query engine: {reason}"
    return None


class AccessConfig(BaseModel):
    """`access:` in the LILY_CONFIG file, at the top (every tenant) or in a tenant's entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policies: tuple[AccessPolicy, ...] = ()

    @model_validator(mode="after")
    def _unique_names(self) -> AccessConfig:
        names = [p.name for p in self.policies]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"policy names must be unique: {dupes}")
        return self


class Visibility:
    """What a caller with `groups` may see under `policies` (global and the tenant's): deny
    wins; the allow policies that apply to the caller restrict it to what one of them
    matches. `expr` filters a frame inside its scan; `shows` decides one record."""

    def __init__(self, policies: Sequence[AccessPolicy], groups: Iterable[str]) -> None:
        groups = frozenset(groups)
        applicable = [p for p in policies if p.applies_to(groups)]
        self.denies = [p for p in applicable if p.effect == "deny"]
        self.allows = [p for p in applicable if p.effect == "allow"]
        conditions: list[pl.Expr] = []
        if self.denies:
            conditions.append(~pl.any_horizontal([p.matches() for p in self.denies]))
        if self.allows:
            conditions.append(pl.any_horizontal([p.matches() for p in self.allows]))
        self.expr: pl.Expr | None = pl.all_horizontal(conditions) if conditions else None

    @property
    def unrestricted(self) -> bool:
        return self.expr is None

    def shows(self, qualified_name: str, type_name: str | None, tags: Any) -> bool:
        if any(p.matches_record(qualified_name, type_name, tags) for p in self.denies):
            return False
        return not self.allows or any(
            p.matches_record(qualified_name, type_name, tags) for p in self.allows
        )

    def filter(self, frame: pl.DataFrame) -> pl.DataFrame:
        return frame if self.expr is None or frame.is_empty() else frame.filter(self.expr)
