"""One stored entity and the JSON shapes Atlas gives it: full entity, header, search hit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ACTIVE = "ACTIVE"
DELETED = "DELETED"
# Who Atlas names as creator and updater: the emulator has one API token, hence one user.
EMULATOR_USER = "service-account-apikey-lily-emulator"


def is_reference(value: Any) -> bool:
    """An Atlas object id (`{"typeName", "uniqueAttributes": {...}}` or `{"typeName", "guid"}`).

    A struct (e.g. a SourceTagAttachment) also carries `typeName` but has `attributes` only, so
    it stays a plain attribute.
    """
    return (
        isinstance(value, dict)
        and isinstance(value.get("typeName"), str)
        and (isinstance(value.get("uniqueAttributes"), dict) or isinstance(value.get("guid"), str))
    )


def is_relationship_value(value: Any) -> bool:
    if isinstance(value, list):
        return bool(value) and all(is_reference(item) for item in value)
    return is_reference(value)


@dataclass(frozen=True, slots=True)
class StoredEntity:
    """An entity as the store holds it. Never mutated: a change makes a new one, so a search can
    read a snapshot of the store without holding its lock."""

    guid: str
    type_name: str
    qualified_name: str
    status: str
    create_time: int
    update_time: int
    version: int
    # Every attribute as sent, relationship attributes included (with their target's guid
    # resolved): the form tests read. The Atlas responses split the two kinds apart.
    attributes: dict[str, Any]
    classifications: list[dict[str, Any]]  # Atlas classification JSON; typeName is the tag id
    business_attributes: dict[str, Any]
    labels: list[str]

    @property
    def name(self) -> Any:
        return self.attributes.get("name")

    def content(self) -> tuple[Any, ...]:
        """What an upsert can change; equal content means the upsert changed nothing."""
        return (
            self.status,
            self.attributes,
            self.classifications,
            self.business_attributes,
            self.labels,
        )

    # -- storage form -------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "guid": self.guid,
            "typeName": self.type_name,
            "status": self.status,
            "createTime": self.create_time,
            "updateTime": self.update_time,
            "version": self.version,
            "attributes": self.attributes,
            "classifications": self.classifications,
            "businessAttributes": self.business_attributes,
            "labels": self.labels,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> StoredEntity:
        return cls(
            guid=doc["guid"],
            type_name=doc["typeName"],
            qualified_name=doc["attributes"]["qualifiedName"],
            status=doc["status"],
            create_time=doc["createTime"],
            update_time=doc["updateTime"],
            version=doc["version"],
            attributes=doc["attributes"],
            classifications=doc["classifications"],
            business_attributes=doc["businessAttributes"],
            labels=doc["labels"],
        )

    # -- Atlas's JSON shapes ------------------------------------------------------------------

    def _classifications_json(self) -> list[dict[str, Any]]:
        return [
            {**c, "entityGuid": self.guid, "entityStatus": self.status}
            for c in self.classifications
        ]

    def _common(self) -> dict[str, Any]:
        return {
            "typeName": self.type_name,
            "guid": self.guid,
            "status": self.status,
            "createdBy": EMULATOR_USER,
            "updatedBy": EMULATOR_USER,
            "createTime": self.create_time,
            "updateTime": self.update_time,
            "isIncomplete": False,
            "labels": self.labels,
            "classifications": self._classifications_json(),
        }

    def entity_json(self, include_relationships: bool) -> dict[str, Any]:
        """GET entity/guid/{guid}: the full entity. Like Atlas, relationship attributes come
        back (under relationshipAttributes) only when the caller did not ignore them."""
        plain = {k: v for k, v in self.attributes.items() if not is_relationship_value(v)}
        related = {k: v for k, v in self.attributes.items() if is_relationship_value(v)}
        return {
            **self._common(),
            "attributes": plain,
            "relationshipAttributes": related if include_relationships else {},
            "businessAttributes": self.business_attributes,
            "version": self.version,
        }

    def header_json(self) -> dict[str, Any]:
        """An AtlasEntityHeader, as listed in a mutation response."""
        return {
            **self._common(),
            "attributes": {"qualifiedName": self.qualified_name, "name": self.name},
            "displayText": self.name,
            "classificationNames": [c["typeName"] for c in self.classifications],
            "meaningNames": [],
            "meanings": [],
        }

    def search_json(self, attributes: list[str], with_classifications: bool) -> dict[str, Any]:
        """An index-search hit: the header plus the attributes the request asked for."""
        hit = self.header_json()
        for attr in attributes:
            if attr in self.attributes:
                hit["attributes"][attr] = self.attributes[attr]
            elif "." in attr:
                # Custom metadata is asked for as "<set id>.<attribute id>" and, as in Atlan,
                # comes back flattened under that key (pyatlan unflattens it).
                cm_set, _, cm_attr = attr.partition(".")
                values = self.business_attributes.get(cm_set)
                if isinstance(values, dict) and cm_attr in values:
                    hit["attributes"][attr] = values[cm_attr]
        if not with_classifications:
            del hit["classifications"]
        return hit
