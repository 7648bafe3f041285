"""Type definitions as `GET /api/meta/types/typedefs` returns them: Atlan tags, entity types and
the structs pyatlan's tag cache insists on."""

from __future__ import annotations

import hashlib
import string
import uuid
from dataclasses import dataclass
from functools import cache
from typing import Any

from atlan_emulator.model import EMULATOR_USER
from atlan_emulator.typenames import ROOT_TYPE, SUPER_TYPE

CATEGORIES = ("ENUM", "STRUCT", "CLASSIFICATION", "ENTITY", "RELATIONSHIP", "BUSINESS_METADATA")
_RESPONSE_KEYS = {
    "ENUM": "enumDefs",
    "STRUCT": "structDefs",
    "CLASSIFICATION": "classificationDefs",
    "ENTITY": "entityDefs",
    "RELATIONSHIP": "relationshipDefs",
    "BUSINESS_METADATA": "businessMetadataDefs",
}
# pyatlan's AtlanTagCache refreshes with CLASSIFICATION + STRUCT and treats an answer without
# struct defs as an expired token, so a few of Atlan's own structs are always served.
_STRUCT_NAMES = ("SourceTagAttachment", "SourceTagAttachmentValue", "PopularityInsights")
_TAG_ID_LENGTH = 22


def tag_id(display_name: str) -> str:
    """The hashed internal name Atlan gives a tag: 22 letters, derived from the display name so
    that ids survive a reset or a restart (a client's tag cache stays valid)."""
    digest = hashlib.sha256(display_name.encode()).digest()
    return "".join(string.ascii_letters[b % len(string.ascii_letters)] for b in digest)[
        :_TAG_ID_LENGTH
    ]


@dataclass(frozen=True, slots=True)
class TagDef:
    name: str  # the hashed id entities carry in classifications[].typeName
    display_name: str
    create_time: int

    @classmethod
    def new(cls, display_name: str, now_ms: int) -> TagDef:
        return cls(tag_id(display_name), display_name, now_ms)

    def to_json(self) -> dict[str, Any]:
        return {
            "category": "CLASSIFICATION",
            "guid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"atlan-tag:{self.name}")),
            "name": self.name,
            "displayName": self.display_name,
            "description": "",
            "createdBy": EMULATOR_USER,
            "updatedBy": EMULATOR_USER,
            "createTime": self.create_time,
            "updateTime": self.create_time,
            "version": 1,
            "typeVersion": "1.0",
            "serviceType": "atlan",
            "attributeDefs": [],
            "superTypes": [],
            "entityTypes": [],
            "subTypes": [],
            "options": {"color": "Gray", "iconName": "atlanTags", "iconType": "icon"},
            "skipDisplayNameUniquenessCheck": False,
        }


def _base_def(category: str, name: str) -> dict[str, Any]:
    return {
        "category": category,
        "guid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"atlan-type:{name}")),
        "name": name,
        "description": name,
        "createdBy": EMULATOR_USER,
        "updatedBy": EMULATOR_USER,
        "version": 1,
        "typeVersion": "1.0",
        "serviceType": "atlan",
    }


@cache
def entity_defs() -> tuple[dict[str, Any], ...]:
    sub_types: dict[str, list[str]] = {}
    for child, parent in SUPER_TYPE.items():
        sub_types.setdefault(parent, []).append(child)
    return tuple(
        {
            **_base_def("ENTITY", name),
            "superTypes": [SUPER_TYPE[name]] if name in SUPER_TYPE else [],
            "subTypes": sorted(sub_types.get(name, [])),
            "attributeDefs": [],
            "relationshipAttributeDefs": [],
            "businessAttributeDefs": {},
        }
        for name in (ROOT_TYPE, *sorted(SUPER_TYPE))
    )


@cache
def struct_defs() -> tuple[dict[str, Any], ...]:
    return tuple({**_base_def("STRUCT", name), "attributeDefs": []} for name in _STRUCT_NAMES)


def typedefs_response(categories: set[str], tags: list[TagDef]) -> dict[str, Any]:
    """The typedefs of the requested categories (all when none is named); the others are []."""
    wanted = categories or set(CATEGORIES)
    served: dict[str, list[dict[str, Any]]] = {
        "CLASSIFICATION": [t.to_json() for t in tags],
        "ENTITY": list(entity_defs()),
        "STRUCT": list(struct_defs()),
    }
    return {
        key: served.get(category, []) if category in wanted else []
        for category, key in _RESPONSE_KEYS.items()
    }


def find_typedef(name: str, tags: list[TagDef]) -> dict[str, Any] | None:
    for tag in tags:
        if tag.name == name:
            return tag.to_json()
    for typedef in (*entity_defs(), *struct_defs()):
        if typedef["name"] == name:
            return typedef
    return None
