"""The subset of the Elasticsearch query DSL that pyatlan's FluentSearch and bulk paging send.

Queries: bool (must, filter, should with minimum_should_match, must_not), term, terms, prefix,
wildcard (`*` and `?`), regexp, range (gt/gte/lt/lte), exists, match, match_phrase, match_all,
match_none; `post_filter`, `sort` (asc/desc, missing values last, `__guid` as the final tie
breaker, so paging by from/size and by timestamp both see one total order), `from`/`size`.

Fields: Atlas's internal ones (`__typeName`, `__superTypeNames`, `__state`, `__guid`,
`__timestamp` = createTime, `__modificationTimestamp` = updateTime, `__traitNames` /
`__classificationNames` = tag ids, `__qualifiedName`) and any attribute by name. `.keyword`,
`.text` and `.stemmed` suffixes are dropped: every field compares as a keyword (exact, or
case-insensitive when the clause says so), except `match`, which compares lower-cased words.
An array matches when any of its values does, as in Elasticsearch.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from atlan_emulator.errors import AtlasError, bad_request
from atlan_emulator.model import StoredEntity
from atlan_emulator.typenames import super_types

Predicate = Callable[[StoredEntity], bool]
# Elasticsearch's index.max_result_window: deeper offset paging is refused, which is why
# pyatlan's bulk search pages by timestamp instead.
MAX_RESULT_WINDOW = 10_000
DEFAULT_SIZE = 10
_SUFFIXES = (".keyword", ".text", ".stemmed")
_WORD = re.compile(r"\w+")

_INTERNAL: dict[str, Callable[[StoredEntity], list[Any]]] = {
    "__typeName": lambda e: [e.type_name],
    "__superTypeNames": lambda e: list(super_types(e.type_name)),
    "__state": lambda e: [e.status],
    "__guid": lambda e: [e.guid],
    "__timestamp": lambda e: [e.create_time],
    "__modificationTimestamp": lambda e: [e.update_time],
    "__qualifiedName": lambda e: [e.qualified_name],
    "__traitNames": lambda e: [c["typeName"] for c in e.classifications],
    "__classificationNames": lambda e: [c["typeName"] for c in e.classifications],
    "__propagatedTraitNames": lambda e: [],
    "__propagatedClassificationNames": lambda e: [],
}


def _field_name(field: str) -> str:
    for suffix in _SUFFIXES:
        if field.endswith(suffix):
            return field[: -len(suffix)]
    return field


def _getter(field: str) -> Callable[[StoredEntity], list[Any]]:
    name = _field_name(field)
    internal = _INTERNAL.get(name)
    if internal is not None:
        return internal

    def attribute_values(entity: StoredEntity) -> list[Any]:
        value = entity.attributes.get(name)
        if value is None:
            return []
        return [v for v in value if v is not None] if isinstance(value, list) else [value]

    return attribute_values


# -- comparison ---------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _membership(wanted: list[Any], case_insensitive: bool) -> Callable[[Any], bool]:
    """A test for "equals one of `wanted`", with Elasticsearch's coercions: two strings compare
    as strings (case-folded when asked), a number matches a number or a numeric string, a
    boolean matches true/false however spelled. Set lookups: a terms clause may list hundreds
    of qualifiedNames, tested against every entity."""
    strings = {w.casefold() if case_insensitive else w for w in wanted if isinstance(w, str)}
    boolean_words = {str(w).lower() for w in wanted if isinstance(w, bool | str)}
    wanted_booleans = {str(w).lower() for w in wanted if isinstance(w, bool)}
    numbers = {n for w in wanted if (n := _number(w)) is not None}
    non_string_numbers = {
        n for w in wanted if not isinstance(w, str) and (n := _number(w)) is not None
    }
    others = [w for w in wanted if not isinstance(w, str | bool | int | float)]

    def test(value: Any) -> bool:
        if isinstance(value, bool):
            return str(value).lower() in boolean_words
        if isinstance(value, str):
            return (
                (value.casefold() if case_insensitive else value) in strings
                or value.lower() in wanted_booleans
                or (bool(non_string_numbers) and _number(value) in non_string_numbers)
            )
        if isinstance(value, int | float):
            return float(value) in numbers
        return value in others

    return test


def _compare(stored: Any, bound: Any) -> int | None:
    a, b = _number(stored), _number(bound)
    if a is not None and b is not None:
        return (a > b) - (a < b)
    if isinstance(stored, str) and isinstance(bound, str):
        return (stored > bound) - (stored < bound)
    return None


# -- query clauses ------------------------------------------------------------------------


def _field_spec(body: Any, clause: str) -> tuple[str, Any]:
    """`{"field": spec}` (plus optional boost/_name) → (field, spec)."""
    if not isinstance(body, dict):
        raise bad_request(f"[{clause}] query malformed: expected an object")
    fields = [k for k in body if k not in ("boost", "_name")]
    if len(fields) != 1:
        raise bad_request(f"[{clause}] query must name exactly one field")
    return fields[0], body[fields[0]]


def _value_spec(spec: Any, key: str = "value") -> tuple[Any, bool]:
    if isinstance(spec, dict):
        return spec.get(key), bool(spec.get("case_insensitive", False))
    return spec, False


def _any(getter: Callable[[StoredEntity], list[Any]], test: Callable[[Any], bool]) -> Predicate:
    return lambda e: any(test(v) for v in getter(e))


def _term(body: Any) -> Predicate:
    field, spec = _field_spec(body, "term")
    wanted, ci = _value_spec(spec)
    return _any(_getter(field), _membership([wanted], ci))


def _terms(body: Any) -> Predicate:
    field, values = _field_spec(body, "terms")
    if not isinstance(values, list):
        raise bad_request("[terms] query requires an array of values")
    return _any(_getter(field), _membership(values, False))


def _prefix(body: Any) -> Predicate:
    field, spec = _field_spec(body, "prefix")
    wanted, ci = _value_spec(spec)
    prefix = str(wanted).casefold() if ci else str(wanted)
    return _any(
        _getter(field),
        lambda v: isinstance(v, str) and (v.casefold() if ci else v).startswith(prefix),
    )


def _pattern_clause(body: Any, clause: str) -> Predicate:
    field, spec = _field_spec(body, clause)
    if isinstance(spec, dict):
        pattern = spec.get("value", spec.get("wildcard"))
        ci = bool(spec.get("case_insensitive", False))
    else:
        pattern, ci = spec, False
    if not isinstance(pattern, str):
        raise bad_request(f"[{clause}] query requires a string pattern")
    if clause == "wildcard":
        pattern = "".join(
            ".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern
        )
    try:
        regex = re.compile(pattern, re.IGNORECASE | re.DOTALL if ci else re.DOTALL)
    except re.error as exc:
        raise bad_request(f"[{clause}] invalid pattern: {exc}") from None
    return _any(_getter(field), lambda v: isinstance(v, str) and regex.fullmatch(v) is not None)


def _range(body: Any) -> Predicate:
    field, spec = _field_spec(body, "range")
    if not isinstance(spec, dict):
        raise bad_request("[range] query requires an object of bounds")
    checks: list[Callable[[int], bool]] = []
    bounds: list[Any] = []
    for op, test in (
        ("gt", lambda c: c > 0),
        ("gte", lambda c: c >= 0),
        ("lt", lambda c: c < 0),
        ("lte", lambda c: c <= 0),
    ):
        if spec.get(op) is not None:
            checks.append(test)
            bounds.append(spec[op])

    def in_range(value: Any) -> bool:
        for test, bound in zip(checks, bounds, strict=True):
            cmp = _compare(value, bound)
            if cmp is None or not test(cmp):
                return False
        return True

    return _any(_getter(field), in_range)


def _exists(body: Any) -> Predicate:
    if not isinstance(body, dict) or not isinstance(body.get("field"), str):
        raise bad_request("[exists] query requires a field")
    getter = _getter(body["field"])
    return lambda e: bool(getter(e))


def _words(value: Any) -> set[str]:
    return set(_WORD.findall(str(value).casefold()))


def _match(body: Any) -> Predicate:
    field, spec = _field_spec(body, "match")
    query, _ = _value_spec(spec, "query")
    operator = spec.get("operator", "or").lower() if isinstance(spec, dict) else "or"
    wanted = _words(query)
    if operator == "and":
        return _any(_getter(field), lambda v: wanted <= _words(v))
    return _any(_getter(field), lambda v: bool(wanted & _words(v)))


def _match_phrase(body: Any) -> Predicate:
    field, spec = _field_spec(body, "match_phrase")
    query, _ = _value_spec(spec, "query")
    phrase = " ".join(_WORD.findall(str(query).casefold()))
    return _any(_getter(field), lambda v: phrase in " ".join(_WORD.findall(str(v).casefold())))


def _clauses(value: Any) -> list[Predicate]:
    if value is None:
        return []
    return [compile_query(q) for q in (value if isinstance(value, list) else [value])]


def _bool(body: Any) -> Predicate:
    if not isinstance(body, dict):
        raise bad_request("[bool] query malformed: expected an object")
    required = _clauses(body.get("must")) + _clauses(body.get("filter"))
    should = _clauses(body.get("should"))
    must_not = _clauses(body.get("must_not"))
    # Elasticsearch: with no must/filter, at least one should clause has to match.
    minimum = _minimum_should_match(body.get("minimum_should_match"), len(should))
    if minimum is None:
        minimum = 0 if required or not should else 1

    def matches(e: StoredEntity) -> bool:
        if not all(p(e) for p in required) or any(p(e) for p in must_not):
            return False
        return minimum == 0 or sum(1 for p in should if p(e)) >= minimum

    return matches


def _minimum_should_match(value: Any, should_count: int) -> int | None:
    if value is None:
        return None
    text = str(value).strip()
    try:
        if text.endswith("%"):
            return int(should_count * int(text[:-1]) / 100)
        number = int(text)
    except ValueError:
        raise bad_request(f"[bool] minimum_should_match [{value}] is not supported") from None
    return number if number >= 0 else max(should_count + number, 0)


_CLAUSES: dict[str, Callable[[Any], Predicate]] = {
    "bool": _bool,
    "term": _term,
    "terms": _terms,
    "prefix": _prefix,
    "wildcard": lambda body: _pattern_clause(body, "wildcard"),
    "regexp": lambda body: _pattern_clause(body, "regexp"),
    "range": _range,
    "exists": _exists,
    "match": _match,
    "match_phrase": _match_phrase,
    "match_all": lambda body: lambda e: True,
    "match_none": lambda body: lambda e: False,
}


def compile_query(query: Any) -> Predicate:
    """Turn one query clause into a predicate over stored entities (400 on anything else)."""
    if not isinstance(query, dict) or len(query) != 1:
        raise bad_request("a query clause must be an object with exactly one key")
    ((kind, body),) = query.items()
    compiler = _CLAUSES.get(kind)
    if compiler is None:
        raise bad_request(
            f"unsupported query [{kind}]: the Atlan emulator interprets {', '.join(_CLAUSES)}"
        )
    return compiler(body)


# -- sorting and paging -------------------------------------------------------------------


def _sort_specs(sort: Any) -> list[tuple[str, bool]]:
    """`[{"field": {"order": "desc"}}, {"f": "asc"}, "f"]` → [(field, descending)]."""
    specs: list[tuple[str, bool]] = []
    for item in sort if isinstance(sort, list) else [sort]:
        if isinstance(item, str):
            field, order = item, "asc"
        elif isinstance(item, dict) and len(item) == 1:
            ((field, spec),) = item.items()
            order = spec.get("order", "asc") if isinstance(spec, dict) else str(spec)
        else:
            raise bad_request(f"malformed sort option {item!r}")
        if field != "_score":  # no relevance scores here: ordering by them is a no-op
            specs.append((field, str(order).lower() == "desc"))
    if not any(_field_name(f) == "__guid" for f, _ in specs):
        specs.append(("__guid", False))  # one total order, so pages never overlap or skip
    return specs


def _sort_key(value: Any) -> tuple[int, Any]:
    number = _number(value) if not isinstance(value, str) else None
    if number is not None:
        return (0, number)
    return (1, value) if isinstance(value, str) else (2, str(value))


def sort_entities(entities: list[StoredEntity], sort: Any) -> list[StoredEntity]:
    """Multi-key sort, missing values last in either direction (Elasticsearch's default).

    One stable pass per key, least significant first; an array sorts by its smallest value
    ascending and its largest descending, as Elasticsearch's default sort mode does.
    """
    ordered = list(entities)
    for field, descending in reversed(_sort_specs(sort)):
        getter = _getter(field)
        keyed = [(e, [_sort_key(v) for v in getter(e)]) for e in ordered]
        present = [(e, max(k) if descending else min(k)) for e, k in keyed if k]
        missing = [e for e, k in keyed if not k]
        present.sort(key=lambda pair: pair[1], reverse=descending)
        ordered = [e for e, _ in present] + missing
    return ordered


# -- narrowing ----------------------------------------------------------------------------

Narrowing = tuple[str, frozenset[str]]  # ("qualifiedName" | "guid", exact values)
_NARROWABLE = {
    "qualifiedName": "qualifiedName",
    "__qualifiedName": "qualifiedName",
    "__guid": "guid",
}


def narrowing(dsl: Any) -> Narrowing | None:
    """A required exact match on qualifiedName or guid in the query, which the store answers
    from its indexes instead of scanning every entity (a lookup of a few hundred names is
    Lily's commonest search). `run_search` still applies the whole query to what it gets."""
    return _narrowing(dsl.get("query") if isinstance(dsl, dict) else None)


def _narrowing(query: Any) -> Narrowing | None:
    if not isinstance(query, dict) or len(query) != 1:
        return None
    ((kind, body),) = query.items()
    if kind == "bool" and isinstance(body, dict):
        for key in ("filter", "must"):
            clauses = body.get(key)
            for clause in clauses if isinstance(clauses, list) else [clauses]:
                if found := _narrowing(clause):
                    return found
        return None
    if kind not in ("term", "terms") or not isinstance(body, dict) or len(body) != 1:
        return None
    ((field, spec),) = body.items()
    target = _NARROWABLE.get(_field_name(field))
    if kind == "term":
        if isinstance(spec, dict):
            if spec.get("case_insensitive"):
                return None
            spec = spec.get("value")
        spec = [spec]
    if target is None or not isinstance(spec, list) or not all(isinstance(v, str) for v in spec):
        return None
    return target, frozenset(spec)


def run_search(entities: Iterable[StoredEntity], dsl: Any) -> tuple[int, list[StoredEntity]]:
    """Evaluate an index-search DSL: (number of matches, the requested page)."""
    if not isinstance(dsl, dict):
        raise bad_request("an index search needs a dsl object")
    try:
        start = int(dsl.get("from", 0) or 0)
        size = int(dsl.get("size", DEFAULT_SIZE) if dsl.get("size") is not None else DEFAULT_SIZE)
    except (TypeError, ValueError):
        raise bad_request("from and size must be integers") from None
    if start < 0 or size < 0:
        raise bad_request("from and size must not be negative")
    if start + size > MAX_RESULT_WINDOW:
        raise AtlasError(
            400,
            "ATLAS-400-00-08A",
            f"Result window is too large, from + size must be less than or equal to: "
            f"[{MAX_RESULT_WINDOW}] but was [{start + size}]. Page by timestamp (bulk search).",
        )
    query = compile_query(dsl["query"]) if dsl.get("query") else (lambda e: True)
    post_filter = compile_query(dsl["post_filter"]) if dsl.get("post_filter") else None
    hits = [e for e in entities if query(e) and (post_filter is None or post_filter(e))]
    ordered = sort_entities(hits, dsl.get("sort", []))
    return len(hits), ordered[start : start + size]
