"""The emulator's state: entities and Atlan tags in DuckDB (in memory, or a file that survives
restarts), mirrored in Python indexes that answer reads and searches.

Every write holds one lock, validates the whole request before changing anything and writes
all changed rows in one DuckDB statement, so a request is atomic and concurrent requests are
serialised. Searches copy the (immutable) records under the lock and filter outside it.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import duckdb

from atlan_emulator import DEFAULT_TAGS
from atlan_emulator.errors import (
    bad_request,
    guid_not_found,
    missing_attribute,
    missing_qualified_name,
    referenced_entity_not_found,
    unique_attribute_not_found,
    unknown_classification,
    unknown_entity_type,
)
from atlan_emulator.model import ACTIVE, DELETED, StoredEntity, is_relationship_value
from atlan_emulator.typedefs import TagDef
from atlan_emulator.typenames import is_entity_type, super_types

DELETE_TYPES = ("SOFT", "HARD", "PURGE")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS entities (
    guid VARCHAR PRIMARY KEY,
    type_name VARCHAR NOT NULL,
    qualified_name VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL,
    body VARCHAR NOT NULL  -- StoredEntity.to_json(); the columns above are for inspection
);
CREATE TABLE IF NOT EXISTS tag_defs (
    name VARCHAR PRIMARY KEY,
    display_name VARCHAR NOT NULL,
    create_time BIGINT NOT NULL
);
"""
# Atlas's read-only bookkeeping on a classification: recomputed on every read.
_DERIVED_CLASSIFICATION_KEYS = ("entityGuid", "entityStatus")


@dataclass(frozen=True, slots=True)
class UpsertOptions:
    """The bulk endpoint's query flags that change what an upsert does to an existing entity."""

    replace_classifications: bool = False  # replaceClassifications / replaceTags
    append_classifications: bool = False  # appendTags
    replace_business_attributes: bool = False  # replace- / overwriteBusinessAttributes


@dataclass(frozen=True, slots=True)
class _Incoming:
    """One entity of a bulk request, validated."""

    type_name: str
    qualified_name: str
    given_guid: str | None
    attributes: dict[str, Any]
    classifications: list[dict[str, Any]] | None  # None: the request did not send the key
    add_classifications: list[dict[str, Any]]
    remove_classifications: list[str]
    business_attributes: dict[str, Any] | None
    labels: list[str] | None


@dataclass(slots=True)
class _Plan:
    """Where each entity of a bulk request goes, known before any is applied, so refs can
    point at entities earlier or later in the same request."""

    guids: dict[tuple[str, str], str] = field(default_factory=dict)  # (type, qn) → guid
    qualified_names: dict[str, str] = field(default_factory=dict)  # guid → qn
    placeholders: dict[str, str] = field(default_factory=dict)  # guid as sent → real guid

    def add(self, type_name: str, qualified_name: str, guid: str, given: str | None) -> None:
        self.guids[(type_name, qualified_name)] = guid
        self.qualified_names[guid] = qualified_name
        if given:
            self.placeholders[given] = guid


def _classifications(raw: dict[str, Any], key: str, known: set[str]) -> list[dict[str, Any]]:
    value = raw.get(key) or []
    if not isinstance(value, list):
        raise bad_request(f"{key} must be a list")
    out: dict[str, dict[str, Any]] = {}
    for item in value:
        type_name = item.get("typeName") if isinstance(item, dict) else None
        if not isinstance(type_name, str) or type_name not in known:
            raise unknown_classification(str(type_name))
        out[type_name] = {
            k: v for k, v in item.items() if k not in _DERIVED_CLASSIFICATION_KEYS
        }  # one per tag: the last one sent wins, as re-attaching a tag does in Atlas
    return list(out.values())


def _merge_classifications(
    current: list[dict[str, Any]], add: list[dict[str, Any]], remove: Iterable[str]
) -> list[dict[str, Any]]:
    dropped = {c["typeName"] for c in add} | set(remove)
    return [c for c in current if c["typeName"] not in dropped] + add


# Relationship attributes through which an entity is contained by a composite parent: Atlan's
# table_columns, view_columns and materialised_view_columns are COMPOSITION relationships,
# so archiving a table archives its columns (Atlas's soft delete of owned entities).
COMPOSITE_PARENT_ATTRIBUTES = ("table", "view", "materialisedView")


class Store:
    def __init__(self, state_path: str | None = None) -> None:
        self._lock = threading.Lock()
        self._db = duckdb.connect(state_path or ":memory:")
        self._db.execute(_SCHEMA)
        self._clock = 0
        self._by_guid: dict[str, StoredEntity] = {}
        self._by_key: dict[tuple[str, str], str] = {}  # (typeName, qualifiedName) → guid
        self._by_qn: dict[str, set[str]] = {}  # qualifiedName → guids, for supertype refs
        self._tags: dict[str, TagDef] = {}  # hashed id → tag
        for (body,) in self._db.execute("SELECT body FROM entities").fetchall():
            self._index(StoredEntity.from_json(json.loads(body)))
        for name, display_name, create_time in self._db.execute(
            "SELECT name, display_name, create_time FROM tag_defs"
        ).fetchall():
            self._tags[name] = TagDef(name, display_name, create_time)
        self._add_tags(list(DEFAULT_TAGS))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _now(self) -> int:
        # Milliseconds that never go backwards, so __timestamp paging keeps its order.
        self._clock = max(self._clock, time.time_ns() // 1_000_000)
        return self._clock

    # -- indexes ------------------------------------------------------------------------------

    def _index(self, entity: StoredEntity) -> None:
        self._by_guid[entity.guid] = entity
        self._by_key[(entity.type_name, entity.qualified_name)] = entity.guid
        self._by_qn.setdefault(entity.qualified_name, set()).add(entity.guid)

    def _unindex(self, entity: StoredEntity) -> None:
        del self._by_guid[entity.guid]
        del self._by_key[(entity.type_name, entity.qualified_name)]
        self._by_qn[entity.qualified_name].discard(entity.guid)

    # -- reads --------------------------------------------------------------------------------

    def snapshot(self) -> list[StoredEntity]:
        with self._lock:
            return list(self._by_guid.values())

    def lookup(self, field: str, values: Iterable[str]) -> list[StoredEntity]:
        """The entities whose `field` ("qualifiedName" or "guid") is one of `values`."""
        with self._lock:
            if field == "guid":
                return [self._by_guid[g] for g in values if g in self._by_guid]
            return [self._by_guid[g] for qn in values for g in self._by_qn.get(qn, ())]

    def count(self) -> int:
        with self._lock:
            return len(self._by_guid)

    def get_by_guid(self, guid: str) -> StoredEntity:
        with self._lock:
            entity = self._by_guid.get(guid)
        if entity is None:
            raise guid_not_found(guid)
        return entity

    def get_by_unique_attribute(self, type_name: str, qualified_name: str) -> StoredEntity:
        if not is_entity_type(type_name):
            raise unknown_entity_type(type_name)
        with self._lock:
            guid = self._find(type_name, qualified_name, _Plan())
            entity = self._by_guid.get(guid) if guid else None
        if entity is None:
            raise unique_attribute_not_found(type_name, qualified_name)
        return entity

    def tags(self) -> list[TagDef]:
        with self._lock:
            return list(self._tags.values())

    def _find(self, type_name: str, qualified_name: str, plan: _Plan) -> str | None:
        """The entity of this type, or of a subtype, with this qualifiedName, stored or about
        to be written by the request being planned."""
        key = (type_name, qualified_name)
        guid = plan.guids.get(key) or self._by_key.get(key)
        if guid:
            return guid
        candidates = [(t, g) for (t, q), g in plan.guids.items() if q == qualified_name]
        candidates += [(self._by_guid[g].type_name, g) for g in self._by_qn.get(qualified_name, ())]
        for candidate_type, candidate_guid in candidates:
            if type_name in super_types(candidate_type):
                return candidate_guid
        return None

    # -- writes -------------------------------------------------------------------------------

    def _write(self, entities: list[StoredEntity]) -> None:
        if not entities:
            return
        self._db.execute(
            "INSERT OR REPLACE INTO entities "
            "(guid, type_name, qualified_name, status, create_time, update_time, body) "
            "SELECT unnest(?), unnest(?), unnest(?), unnest(?), unnest(?), unnest(?), unnest(?)",
            [
                [e.guid for e in entities],
                [e.type_name for e in entities],
                [e.qualified_name for e in entities],
                [e.status for e in entities],
                [e.create_time for e in entities],
                [e.update_time for e in entities],
                [json.dumps(e.to_json(), separators=(",", ":")) for e in entities],
            ],
        )

    def _parse(self, raw: Any) -> _Incoming:
        if not isinstance(raw, dict):
            raise bad_request("each entity must be an object")
        type_name = raw.get("typeName")
        if not isinstance(type_name, str) or not is_entity_type(type_name):
            raise unknown_entity_type(str(type_name))
        attributes = raw.get("attributes") or {}
        relationship_attributes = raw.get("relationshipAttributes") or {}
        if not isinstance(attributes, dict) or not isinstance(relationship_attributes, dict):
            raise bad_request(f"{type_name}: attributes must be an object")
        qualified_name = attributes.get("qualifiedName")
        if not isinstance(qualified_name, str) or not qualified_name:
            raise missing_qualified_name(type_name)
        name = attributes.get("name")
        if name is None or name == "":
            raise missing_attribute(type_name, "name")
        known = set(self._tags)
        given_guid = raw.get("guid")
        labels = raw.get("labels")
        business_attributes = raw.get("businessAttributes")
        if business_attributes is not None and not isinstance(business_attributes, dict):
            raise bad_request(f"{type_name}: businessAttributes must be an object")
        return _Incoming(
            type_name=type_name,
            qualified_name=qualified_name,
            given_guid=given_guid if isinstance(given_guid, str) else None,
            attributes={**relationship_attributes, **attributes},
            classifications=(
                _classifications(raw, "classifications", known)
                if "classifications" in raw
                else None
            ),
            add_classifications=_classifications(raw, "addOrUpdateClassifications", known),
            remove_classifications=[
                c["typeName"] for c in _classifications(raw, "removeClassifications", known)
            ],
            business_attributes=business_attributes,
            labels=list(labels) if isinstance(labels, list) else None,
        )

    def _resolve(self, value: Any, plan: _Plan) -> Any:
        """A ref (or list of refs) with the real guid of its target, or 404 naming it."""
        if isinstance(value, list):
            return [self._resolve(v, plan) for v in value]
        type_name = value["typeName"]
        unique = value.get("uniqueAttributes")
        qualified_name = unique.get("qualifiedName") if isinstance(unique, dict) else None
        if isinstance(qualified_name, str):
            guid = self._find(type_name, qualified_name, plan)
            if guid is None:
                raise referenced_entity_not_found(type_name, "qualifiedName", qualified_name)
        else:
            given = value["guid"]
            guid = plan.placeholders.get(given) or (given if given in self._by_guid else None)
            if guid is None:
                raise referenced_entity_not_found(type_name, "guid", given)
            qualified_name = plan.qualified_names.get(guid) or self._by_guid[guid].qualified_name
        return {
            "typeName": type_name,
            "guid": guid,
            "uniqueAttributes": {"qualifiedName": qualified_name},
        }

    def _apply(
        self,
        base: StoredEntity | None,
        item: _Incoming,
        guid: str,
        options: UpsertOptions,
        now: int,
        resolve: Callable[[Any], Any],
    ) -> StoredEntity:
        """`base` with `item` applied: given attributes replace, null removes, others stay."""
        attributes = dict(base.attributes) if base else {}
        for name, value in item.attributes.items():
            if value is None:
                attributes.pop(name, None)
            else:
                attributes[name] = resolve(value) if is_relationship_value(value) else value

        if base is None:
            tags = item.classifications or []
        elif options.replace_classifications and item.classifications is not None:
            tags = item.classifications
        else:
            tags = base.classifications
        if base is None or options.append_classifications:
            tags = _merge_classifications(
                tags, item.add_classifications, item.remove_classifications
            )

        business = dict(base.business_attributes) if base else {}
        if item.business_attributes is not None:
            if base is None or options.replace_business_attributes:
                business = dict(item.business_attributes)
            else:
                for cm_set, values in item.business_attributes.items():
                    merged = business.get(cm_set)
                    business[cm_set] = (
                        {**merged, **values}
                        if isinstance(merged, dict) and isinstance(values, dict)
                        else values
                    )

        return StoredEntity(
            guid=guid,
            type_name=item.type_name,
            qualified_name=item.qualified_name,
            status=ACTIVE,  # an upsert restores a soft-deleted entity
            create_time=base.create_time if base else now,
            update_time=now,
            version=base.version + 1 if base else 1,
            attributes=attributes,
            classifications=tags,
            business_attributes=business,
            labels=item.labels if item.labels is not None else (base.labels if base else []),
        )

    def upsert(self, raw_entities: Any, options: UpsertOptions) -> dict[str, Any]:
        """POST entity/bulk. Everything is checked before anything is written."""
        if not isinstance(raw_entities, list):
            raise bad_request("the request needs an entities list")
        with self._lock:
            now = self._now()
            incoming = [self._parse(raw) for raw in raw_entities]
            plan = _Plan()
            for item in incoming:
                key = (item.type_name, item.qualified_name)
                guid = plan.guids.get(key) or self._by_key.get(key) or str(uuid.uuid4())
                plan.add(item.type_name, item.qualified_name, guid, item.given_guid)

            def resolve(value: Any) -> Any:
                return self._resolve(value, plan)

            results: dict[str, StoredEntity] = {}
            for item in incoming:
                guid = plan.guids[(item.type_name, item.qualified_name)]
                base = results.get(guid) or self._by_guid.get(guid)
                results[guid] = self._apply(base, item, guid, options, now, resolve)

            created = [e for g, e in results.items() if g not in self._by_guid]
            updated = [
                e
                for g, e in results.items()
                if g in self._by_guid and e.content() != self._by_guid[g].content()
            ]
            self._write(created + updated)
            for entity in created + updated:
                self._index(entity)
        mutated = {
            op: [e.header_json() for e in entities]
            for op, entities in (("CREATE", created), ("UPDATE", updated))
            if entities
        }
        return {"mutatedEntities": mutated, "guidAssignments": plan.placeholders}

    def delete(self, guids: list[str], delete_type: str) -> dict[str, Any]:
        """DELETE entity/bulk: SOFT marks DELETED; HARD and PURGE remove. Unknown guids are
        skipped, as Atlas does."""
        if delete_type not in DELETE_TYPES:
            raise bad_request(f"deleteType must be one of {', '.join(DELETE_TYPES)}")
        if not guids:
            raise bad_request("at least one guid is required")
        with self._lock:
            now = self._now()
            found = [self._by_guid[g] for g in dict.fromkeys(guids) if g in self._by_guid]
            if delete_type == "SOFT":
                deleted = [
                    replace(e, status=DELETED, update_time=now, version=e.version + 1)
                    for e in [*found, *self._composite_children(found)]
                    if e.status != DELETED
                ]
                self._write(deleted)
                for entity in deleted:
                    self._index(entity)
            elif found:
                deleted = [replace(e, status=DELETED) for e in found]
                self._db.execute(
                    "DELETE FROM entities WHERE list_contains(?, guid)", [[e.guid for e in found]]
                )
                for entity in found:
                    self._unindex(entity)
            else:
                deleted = []
        mutated = {"DELETE": [e.header_json() for e in deleted]} if deleted else {}
        return {"mutatedEntities": mutated}

    def _composite_children(self, parents: list[StoredEntity]) -> list[StoredEntity]:
        """The active entities that `parents` contain through a composite relationship
        (a table's or view's columns), at any depth: Atlas soft-deletes them with their
        container. Restoring the container does not restore them."""
        children: list[StoredEntity] = []
        frontier = {e.guid for e in parents}
        seen = set(frontier)
        while frontier:
            found = [
                e
                for e in self._by_guid.values()
                if e.guid not in seen
                and e.status != DELETED
                and any(
                    isinstance(ref := e.attributes.get(attr), dict) and ref.get("guid") in frontier
                    for attr in COMPOSITE_PARENT_ATTRIBUTES
                )
            ]
            children.extend(found)
            frontier = {e.guid for e in found}
            seen |= frontier
        return children

    def add_tags(self, display_names: Iterable[str]) -> list[TagDef]:
        """Create Atlan tags by display name; one that exists is kept as it is."""
        names = list(dict.fromkeys(display_names))
        if any(not isinstance(n, str) or not n.strip() for n in names):
            raise bad_request("tag names must be non-empty strings")
        with self._lock:
            return self._add_tags(names)

    def _add_tags(self, names: list[str]) -> list[TagDef]:
        now = self._now()
        by_display = {t.display_name: t for t in self._tags.values()}
        new = [TagDef.new(n, now) for n in names if n not in by_display]
        if new:
            self._db.execute(
                "INSERT OR REPLACE INTO tag_defs (name, display_name, create_time) "
                "SELECT unnest(?), unnest(?), unnest(?)",
                [
                    [t.name for t in new],
                    [t.display_name for t in new],
                    [t.create_time for t in new],
                ],
            )
            for tag in new:
                self._tags[tag.name] = tag
                by_display[tag.display_name] = tag
        return [by_display[n] for n in names]

    def reset(self) -> None:
        with self._lock:
            self._db.execute("DELETE FROM entities; DELETE FROM tag_defs;")
            self._by_guid.clear()
            self._by_key.clear()
            self._by_qn.clear()
            self._tags.clear()
            self._add_tags(list(DEFAULT_TAGS))
