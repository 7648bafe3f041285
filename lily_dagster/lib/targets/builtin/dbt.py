"""dbt target: the hub's metadata written into a dbt project's property files (schema.yml),
so `dbt docs` and every tool reading the manifest show the catalogue's descriptions, owners,
certificates and classifications next to the models.

The files are people's code: they are edited round-trip (ruamel.yaml), so comments, key
order, quoting and indentation stay as they were and only the values Lily owns change.
`plan_dbt_updates` works out every edit without touching the disk (dry runs, tests,
reports); `apply_dbt_plan` writes the files that change, each atomically.
"""

from __future__ import annotations

import io
import logging
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import Field
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.scalarstring import (
    DoubleQuotedScalarString,
    FoldedScalarString,
    LiteralScalarString,
    SingleQuotedScalarString,
)
from ruamel.yaml.tokens import CommentToken

from lily_dagster.lib.plugins import PluginOptions, parse_options
from lily_dagster.lib.targets import (
    DeliveryContext,
    TargetRejectedError,
    TargetUnavailableError,
    register_target,
)
from lily_dagster.lib.targets.records import (
    COLUMN_TYPE,
    RELATION_KEYWORDS,
    Scope,
    in_scope,
    json_object,
    record_description,
    split_qualified_name,
)
from lily_dagster.settings import ConfigError, TargetConfig

logger = logging.getLogger(__name__)

# Property-file sections whose entries are relations in the warehouse (sources are other
# systems' tables: never matched).
RESOURCE_SECTIONS = ("models", "seeds", "snapshots")
# dbt_project.yml settings naming the directories of those resources, with dbt's defaults.
RESOURCE_PATHS = {"model-paths": "models", "seed-paths": "seeds", "snapshot-paths": "snapshots"}
# `meta` keys Lily writes.
OWNER = "owner"
CERTIFICATE = "certificate"
CLASSIFICATIONS = "classifications"
STATUS = "lily_status"  # `archived`, with on_archive: tag
# With `match: meta`, a model names its hub record under this meta key.
MATCH_KEY = "lily_qualified_name"


@dataclass(frozen=True)
class DbtOptions:
    """How hub records map onto the project (the target's options, parsed)."""

    match: Literal["name", "meta"] = "name"
    tags: bool = True
    on_archive: Literal["ignore", "tag"] = "ignore"
    meta_location: Literal["config", "top"] = "config"
    scope: tuple[str, ...] = ()


@dataclass(frozen=True)
class DbtEdit:
    """One value changed in one property file."""

    path: Path
    resource: str  # the model's (seed's, snapshot's) name
    column: str | None
    key: str  # description, meta.owner, meta.certificate, meta.classifications, tags, ...
    before: Any
    after: Any  # None: removed
    qualified_name: str


@dataclass(frozen=True)
class DbtFileUpdate:
    path: Path
    original: str
    updated: str


@dataclass
class DbtPlan:
    """What a batch of changes would do to a project: the files to rewrite, each edit, and
    which hub records matched a model (and column), did not, or were not for this target."""

    project_dir: Path
    updates: list[DbtFileUpdate] = field(default_factory=list)
    edits: list[DbtEdit] = field(default_factory=list)
    matched: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        return {
            "matched": len(self.matched),
            "unmatched": len(self.unmatched),
            "skipped": len(self.skipped),
            "edits": len(self.edits),
            "files": len(self.updates),
        }


# ---------------------------------------------------------------------------------------
# Values as dbt wants them
# ---------------------------------------------------------------------------------------


def dbt_tag(classification: str) -> str | None:
    """A classification as a dbt tag usable in selectors (`tag:pii_email`): lower case, runs
    of characters other than letters, digits, `_` and `-` as one `_`."""
    tag = re.sub(r"[^a-z0-9_-]+", "_", classification.strip().lower()).strip("_")
    return tag or None


_JINJA_OPEN = re.compile(r"\{([{%#])")


def jinja_safe(text: str) -> str:
    """Text dbt renders as itself: dbt runs property values through Jinja, so a hub value
    holding `{{`, `{%` or `{#` would break `dbt parse` (or run code); each opener is written
    as a Jinja expression printing it."""
    return _JINJA_OPEN.sub(lambda m: "{{ '{" + m.group(1) + "' }}", text)


def _block_safe(text: str) -> bool:
    lines = text.split("\n")
    return (
        not text.startswith((" ", "\n"))
        and all(line == line.rstrip() for line in lines)
        and all(ch == "\n" or ch.isprintable() for ch in text)
    )


def _styled(text: str, old: Any) -> Any:
    """A new string in the style of the value it replaces (quotes, block scalar); multi-line
    text as a literal block where YAML can hold it so."""
    multiline = "\n" in text.rstrip("\n")
    if isinstance(old, LiteralScalarString | FoldedScalarString) or multiline:
        if not _block_safe(text):
            return text
        if isinstance(old, FoldedScalarString) and not multiline:
            return FoldedScalarString(text + "\n" if old.endswith("\n") else text)
        return LiteralScalarString(text)
    if isinstance(old, SingleQuotedScalarString):
        return SingleQuotedScalarString(text)
    if isinstance(old, DoubleQuotedScalarString):
        return DoubleQuotedScalarString(text)
    return text


def _flow_list(items: list[str]) -> CommentedSeq:
    seq = CommentedSeq(items)
    seq.fa.set_flow_style()
    return seq


# ---------------------------------------------------------------------------------------
# Round-trip editing that keeps comments and blank lines where they were
# ---------------------------------------------------------------------------------------
# ruamel keeps the comments and blank lines that follow a value with that value (for a
# collection: with its last item). A key inserted after it would land below them, and a key
# deleted would take them along; these helpers move them to the right key.


def _trailing_slot(node: Any, key: Any, create: bool) -> tuple[list[Any], int] | None:
    """Where the comment following `node[key]` is kept, as (list, index): for a block
    collection, with its deepest last item."""
    value = node[key]
    if isinstance(value, CommentedMap | CommentedSeq) and len(value) and not value.fa.flow_style():
        last = next(reversed(value)) if isinstance(value, CommentedMap) else len(value) - 1
        return _trailing_slot(value, last, create)
    index = 2 if isinstance(node, CommentedMap) else 0
    if key not in node.ca.items:
        if not create:
            return None
        node.ca.items[key] = [None, None, None, None]
    return node.ca.items[key], index


def _take_following(node: Any, key: Any) -> CommentToken | None:
    """Detach the lines that follow `node[key]`'s own line (blank lines, comments of the
    next item), leaving its end-of-line comment in place."""
    where = _trailing_slot(node, key, create=False)
    if where is None:
        return None
    slot, index = where
    token = slot[index]
    if not isinstance(token, CommentToken) or "\n" not in token.value:
        return None
    own, rest = token.value.split("\n", 1)
    if not rest:
        return None
    if own.strip():
        token.value = own + "\n"
    else:
        slot[index] = None
    return CommentToken("\n" + rest, token.start_mark, None)


def _give_following(node: Any, key: Any, token: CommentToken | None) -> None:
    if token is None:
        return
    where = _trailing_slot(node, key, create=True)
    if where is None:
        return
    slot, index = where
    current = slot[index]
    if isinstance(current, CommentToken):
        token.value = current.value.rstrip("\n") + token.value
    slot[index] = token


def _insert(mapping: CommentedMap, key: str, value: Any, after: tuple[str, ...] = ()) -> None:
    """Add a key after the first of `after` present (else at the end), keeping the lines
    that followed its predecessor after the new key."""
    keys = list(mapping)
    position = len(keys)
    for candidate in after:
        if candidate in mapping:
            position = keys.index(candidate) + 1
            break
    previous = keys[position - 1] if position else None
    moved = _take_following(mapping, previous) if previous is not None else None
    mapping.insert(position, key, value)
    _give_following(mapping, key, moved)


def _sink_following(parent: CommentedMap, key: str) -> None:
    """A collection created empty took over the lines following its predecessor at its own
    key; now that it has items, they go after its last one (else they would be written
    right below the key, inside the collection)."""
    slot = parent.ca.items.get(key)
    value = parent.get(key)
    if not slot or not isinstance(slot[2], CommentToken):
        return
    if not isinstance(value, CommentedMap | CommentedSeq) or not len(value):
        return
    if value.fa.flow_style():
        return
    token, slot[2] = slot[2], None
    last = next(reversed(value)) if isinstance(value, CommentedMap) else len(value) - 1
    _give_following(value, last, token)


def _eol_gap(node: CommentedMap, key: str, text: str) -> tuple[CommentToken, int, int] | None:
    """The end-of-line comment after `node[key]`, with the column its value starts at and
    the spaces between value and comment in the file."""
    slot = node.ca.items.get(key)
    token = slot[2] if slot and len(slot) > 2 else None
    if not isinstance(token, CommentToken) or not token.value.startswith("#"):
        return None
    try:
        value_column = node.lc.value(key)[1]
        line = text.splitlines()[token.start_mark.line]
    except (KeyError, IndexError, TypeError):
        return None
    before = line[: token.column]
    return token, value_column, len(before) - len(before.rstrip())


def _inline_width(value: Any) -> int | None:
    """How wide a value is written on its key's line; None when it takes more lines."""
    probe = CommentedMap()
    probe["k"] = value
    out = io.StringIO()
    _yaml().dump(probe, out)
    first, _, rest = out.getvalue().partition("\n")
    return None if rest.strip() else len(first) - len("k: ")


def _delete(mapping: CommentedMap, key: str) -> None:
    """Remove a key; the lines that followed it now follow its predecessor."""
    keys = list(mapping)
    moved = _take_following(mapping, key)
    del mapping[key]
    mapping.ca.items.pop(key, None)
    index = keys.index(key)
    if moved is not None and index > 0:
        _give_following(mapping, keys[index - 1], moved)


# ---------------------------------------------------------------------------------------
# The project
# ---------------------------------------------------------------------------------------


def _yaml() -> YAML:
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 1 << 16  # never re-wrap long lines
    return yaml


def _problem(path: Path, exc: YAMLError) -> str:
    if isinstance(exc, MarkedYAMLError) and exc.problem:
        where = f" (line {exc.problem_mark.line + 1})" if exc.problem_mark else ""
        return f"{path}: not valid YAML: {exc.problem}{where}"
    return f"{path}: not valid YAML: {(str(exc).splitlines() or ['?'])[0]}"


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TargetRejectedError(f"{path}: not valid YAML: not UTF-8 ({exc.reason})") from None
    except OSError as exc:
        raise TargetUnavailableError(f"{path}: cannot read: {exc.strerror}") from exc


def _resource_dirs(project_dir: Path) -> list[Path]:
    """The directories dbt reads models, seeds and snapshots from (dbt_project.yml), within
    the project."""
    project_file = project_dir / "dbt_project.yml"
    try:
        settings = YAML(typ="safe").load(_read(project_file)) or {}
    except YAMLError as exc:
        raise TargetRejectedError(_problem(project_file, exc)) from None
    dirs: list[Path] = []
    root = project_dir.resolve()
    for key, default in RESOURCE_PATHS.items():
        value = settings.get(key, [default]) if isinstance(settings, dict) else [default]
        for name in value if isinstance(value, list) else [value]:
            path = (project_dir / str(name)).resolve()
            if path.is_dir() and path.is_relative_to(root) and path not in dirs:
                dirs.append(path)
    return dirs


def property_files(project_dir: Path) -> list[Path]:
    """Every *.yml / *.yaml file under the project's model, seed and snapshot directories."""
    files: set[Path] = set()
    for directory in _resource_dirs(project_dir):
        for path in directory.rglob("*"):
            if path.suffix in (".yml", ".yaml") and path.is_file() and not path.is_symlink():
                files.add(path)
    return sorted(files)


@dataclass
class _PropertyFile:
    path: Path
    text: str
    doc: Any
    touched: bool = False
    # Collections Lily added, as (parent, key): see _sink_following.
    created: list[tuple[CommentedMap, str]] = field(default_factory=list)

    def entries(self) -> Iterator[CommentedMap]:
        if not isinstance(self.doc, CommentedMap):
            return
        for section in RESOURCE_SECTIONS:
            items = self.doc.get(section)
            if isinstance(items, CommentedSeq):
                for entry in items:
                    if isinstance(entry, CommentedMap) and isinstance(entry.get("name"), str):
                        yield entry


def _load(path: Path) -> _PropertyFile:
    text = _read(path)
    try:
        doc = _yaml().load(text)
    except YAMLError as exc:
        raise TargetRejectedError(_problem(path, exc)) from None
    return _PropertyFile(path, text, doc)


# Indentation styles tried, most common first: (mapping, sequence, offset).
_INDENTS = ((2, 4, 2), (2, 2, 0), (4, 4, 0), (4, 6, 2), (4, 4, 2), (3, 3, 0), (2, 3, 1))


def _dump(doc: Any, indent: tuple[int, int, int]) -> str:
    yaml = _yaml()
    yaml.indent(mapping=indent[0], sequence=indent[1], offset=indent[2])
    out = io.StringIO()
    yaml.dump(doc, out)
    return out.getvalue()


def _indent_of(text: str) -> tuple[int, int, int]:
    """The indentation that writes the file back as it was (ruamel does not record it): the
    first style that round-trips the original exactly, else the closest."""
    best, best_diff = _INDENTS[0], None
    lines = text.splitlines()
    for indent in _INDENTS:
        dumped = _dump(_yaml().load(text), indent)
        if dumped == text:
            return indent
        diff = sum(a != b for a, b in zip(lines, dumped.splitlines(), strict=False))
        if best_diff is None or diff < best_diff:
            best, best_diff = indent, diff
    return best


def _render(file: _PropertyFile) -> str:
    text = file.text.replace("\r\n", "\n")
    bom = text.startswith("\ufeff")
    updated = _dump(file.doc, _indent_of(text.removeprefix("\ufeff")))
    if bom:
        updated = "\ufeff" + updated
    return updated.replace("\n", "\r\n") if "\r\n" in file.text else updated


# ---------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Change:
    qualified_name: str
    relation_key: str  # the model to find: its name (match: name) or qualified name (meta)
    column: str | None
    archived: bool
    attributes: dict[str, Any]
    classifications: list[str]
    previous_classifications: list[str]


def _match_key(entry: CommentedMap) -> Any:
    """The hub record a model names in its meta (`config.meta` or the older top-level)."""
    config = entry.get("config")
    for meta in (
        config.get("meta") if isinstance(config, CommentedMap) else None,
        entry.get("meta"),
    ):
        if isinstance(meta, CommentedMap) and MATCH_KEY in meta:
            return meta[MATCH_KEY]
    return None


def _index(files: list[_PropertyFile], match: str) -> dict[str, list[tuple[_PropertyFile, Any]]]:
    index: dict[str, list[tuple[_PropertyFile, Any]]] = {}
    for file in files:
        for entry in file.entries():
            if match == "name":
                key: Any = entry["name"].lower()
            else:
                key = _match_key(entry)
            if isinstance(key, str):
                index.setdefault(key, []).append((file, entry))
    return index


def _change_of(row: dict[str, Any], options: DbtOptions) -> _Change | None:
    qn, type_name = row["qualified_name"], row["type_name"]
    attributes = json_object(row["attributes"])
    before = json_object(row["before"])
    if type_name in RELATION_KEYWORDS:
        relation_name, relation_qn, column = row["name"], qn, None
    elif type_name == COLUMN_TYPE:
        parts = split_qualified_name(qn, column=True)
        parent = attributes.get("parent_qualified_name")
        relation_qn = parts.relation if parts else parent if isinstance(parent, str) else None
        relation_name = parts.table if parts else None
        relation_name = relation_name or attributes.get("table_name") or attributes.get("view_name")
        column = row["name"]
    else:
        return None
    relation_key = relation_qn if options.match == "meta" else relation_name
    if not isinstance(relation_key, str) or not relation_key:
        return None
    if options.match == "name":
        relation_key = relation_key.lower()
    was = before.get("classifications")
    return _Change(
        qualified_name=qn,
        relation_key=relation_key,
        column=column,
        archived=row["change"] == "archived" or row["status"] == "DELETED",
        attributes=attributes,
        classifications=[c for c in row["classifications"] or [] if isinstance(c, str)],
        previous_classifications=[c for c in was if isinstance(c, str)]
        if isinstance(was, list)
        else [],
    )


class _Editor:
    """Applies one change to one model or column entry, recording each edit."""

    def __init__(
        self,
        plan: DbtPlan,
        file: _PropertyFile,
        resource: str,
        change: _Change,
        options: DbtOptions,
    ) -> None:
        self.plan, self.file, self.resource = plan, file, resource
        self.change, self.options = change, options
        self.removed = False  # whether the change being applied removed a key

    def _record(self, column: str | None, key: str, before: Any, after: Any) -> None:
        self.file.touched = True
        self.plan.edits.append(
            DbtEdit(
                self.file.path,
                self.resource,
                column,
                key,
                before,
                after,
                self.change.qualified_name,
            )
        )

    def _child(self, node: CommentedMap, key: str, create: bool) -> CommentedMap | None:
        value = node.get(key)
        if isinstance(value, CommentedMap):
            return value
        if not create or (key in node and value is not None):
            return None  # absent, or not a mapping (left as the author wrote it)
        new = CommentedMap()
        if key in node:
            node[key] = new
        else:
            _insert(node, key, new, after=("description", "name"))
            self.file.created.append((node, key))
        return new

    def _meta(self, node: CommentedMap, create: bool) -> CommentedMap | None:
        config = node.get("config")
        if isinstance(config, CommentedMap) and isinstance(config.get("meta"), CommentedMap):
            return config["meta"]
        if isinstance(node.get("meta"), CommentedMap):
            return node["meta"]
        if not create:
            return None
        if self.options.meta_location == "top":
            return self._child(node, "meta", True)
        config = self._child(node, "config", True)
        return None if config is None else self._child(config, "meta", True)

    def _tags_holder(self, node: CommentedMap, create: bool) -> CommentedMap | None:
        config = node.get("config")
        if isinstance(config, CommentedMap) and "tags" in config:
            return config
        if "tags" in node:
            return node
        if not create:
            return None
        if self.options.meta_location == "top":
            return node
        return self._child(node, "config", True)

    def _set(self, node: CommentedMap, column: str | None, key: str, label: str, text: str) -> None:
        text = jinja_safe(text)
        old = node.get(key)
        if isinstance(old, str) and old.rstrip("\n") == text.rstrip("\n"):
            return
        self._replace(node, key, _styled(text, old))
        self._record(column, label, None if old is None else str(old), text)

    def _replace(self, node: CommentedMap, key: str, value: Any) -> None:
        """Set a value; an end-of-line comment after it keeps its distance from the value."""
        if key not in node:
            _insert(node, key, value, after=("description", "name"))
            return
        gap = _eol_gap(node, key, self.file.text)
        node[key] = value
        if gap is not None:
            token, value_column, spaces = gap
            width = _inline_width(value)
            if width is not None:
                token.column = value_column + width + spaces

    def _set_list(
        self, node: CommentedMap, column: str | None, key: str, label: str, items: list[str]
    ) -> None:
        old = node.get(key)
        old_items = list(old) if isinstance(old, list) else None
        if old_items == items:
            return
        if isinstance(old, CommentedSeq):
            value = old
            del value[:]
            value.extend(items)
        else:
            value = _flow_list(items)
        self._replace(node, key, value)
        self._record(column, label, old_items, items)

    def _remove(self, node: CommentedMap | None, column: str | None, key: str, label: str) -> None:
        if node is not None and key in node:
            old = node[key]
            _delete(node, key)
            self.removed = True
            self._record(column, label, list(old) if isinstance(old, list) else old, None)

    def _prune(self, node: CommentedMap) -> None:
        """Drop the `meta`, `tags` and `config` that Lily's removals left empty: taking back
        what Lily wrote gives the file as it was."""
        config = node.get("config")
        for parent in (config, node):
            if not isinstance(parent, CommentedMap):
                continue
            for key in ("meta", "tags"):
                value = parent.get(key)
                if isinstance(value, CommentedMap | CommentedSeq) and not value:
                    _delete(parent, key)
        if isinstance(config, CommentedMap) and not config:
            _delete(node, "config")

    def apply(self, node: CommentedMap, column: str | None) -> None:
        self.removed = False
        self._apply(node, column)
        if self.removed:
            self._prune(node)

    def _apply(self, node: CommentedMap, column: str | None) -> None:
        change = self.change
        if change.archived:
            meta = self._meta(node, create=True)
            if meta is not None:
                self._set(meta, column, STATUS, f"meta.{STATUS}", "archived")
            return
        self._remove(self._meta(node, create=False), column, STATUS, f"meta.{STATUS}")
        attributes = change.attributes
        description = record_description(attributes)
        if description is not None:
            self._set(node, column, "description", "description", description)
        users = [u for u in attributes.get("owner_users") or [] if isinstance(u, str)]
        groups = [g for g in attributes.get("owner_groups") or [] if isinstance(g, str)]
        owner = ", ".join(users or groups)
        certificate = attributes.get("certificate_status")
        classifications = list(dict.fromkeys(change.classifications))
        previous_meta = self._meta(node, create=False)
        written = previous_meta.get(CLASSIFICATIONS) if previous_meta is not None else None
        if not isinstance(certificate, str):
            certificate = ""
        meta = self._meta(node, create=bool(owner or certificate or classifications))
        if meta is not None:
            if owner:
                self._set(meta, column, OWNER, f"meta.{OWNER}", owner)
            if certificate:
                self._set(meta, column, CERTIFICATE, f"meta.{CERTIFICATE}", certificate)
            if classifications:
                self._set_list(
                    meta,
                    column,
                    CLASSIFICATIONS,
                    f"meta.{CLASSIFICATIONS}",
                    [jinja_safe(c) for c in classifications],
                )
            else:
                self._remove(meta, column, CLASSIFICATIONS, f"meta.{CLASSIFICATIONS}")
        if self.options.tags:
            self._apply_tags(node, column, classifications, written)

    def _apply_tags(
        self, node: CommentedMap, column: str | None, classifications: list[str], written: Any
    ) -> None:
        wanted = [t for t in dict.fromkeys(dbt_tag(c) for c in classifications) if t]
        # Tags Lily put there before: from the classifications it wrote into meta, and the
        # ones the hub record had before this change. Other tags are the authors'.
        previous = list(self.change.previous_classifications)
        if isinstance(written, list):
            previous += [c for c in written if isinstance(c, str)]
        stale = {dbt_tag(c) for c in previous} - set(wanted)
        holder = self._tags_holder(node, create=bool(wanted))
        if holder is None:
            return
        current = holder.get("tags")
        existing = [current] if isinstance(current, str) else list(current or [])
        kept = [t for t in existing if t not in stale]
        updated = kept + [t for t in wanted if t not in kept]
        if updated == existing:
            return
        label = "tags" if holder is node else "config.tags"
        if updated:
            self._set_list(holder, column, "tags", label, updated)
        else:
            self._remove(holder, column, "tags", label)


def plan_dbt_updates(
    project_dir: Path | str, changes: pl.DataFrame, options: DbtOptions | None = None
) -> DbtPlan:
    """What a batch of hub changes (CHANGE_SCHEMA, in change-log order) does to a dbt
    project's property files, without writing anything.

    A table or view matches the models (seeds, snapshots) of the same name, case-insensitive
    (`match: meta`: the models whose meta `lily_qualified_name` is its qualified name); a
    column matches the column of the same name in its table's models. Per match: the
    description (when the hub has one), meta `owner` (owner users, else groups), `certificate`
    and `classifications`, and the classifications as tags (Lily's earlier tags replaced,
    the authors' kept). An archived record gets meta `lily_status: archived` with
    `on_archive: tag`, else is skipped. Raises TargetRejectedError for a file that is not
    valid YAML."""
    options = options or DbtOptions()
    project = Path(project_dir)
    plan = DbtPlan(project)
    files = [_load(path) for path in property_files(project)]
    index = _index(files, options.match)
    for row in changes.iter_rows(named=True):
        qn = row["qualified_name"]
        change = _change_of(row, options) if in_scope(qn, options.scope) else None
        if change is None or (change.archived and options.on_archive == "ignore"):
            plan.skipped.append(qn)
            continue
        found = False
        for file, entry in index.get(change.relation_key, []):
            editor = _Editor(plan, file, entry["name"], change, options)
            if change.column is None:
                editor.apply(entry, None)
                found = True
                continue
            for column in entry.get("columns") or []:
                name = column.get("name") if isinstance(column, CommentedMap) else None
                if isinstance(name, str) and name.lower() == change.column.lower():
                    editor.apply(column, name)
                    found = True
        (plan.matched if found else plan.unmatched).append(qn)
    for file in files:
        for parent, key in file.created:
            _sink_following(parent, key)
        if file.touched:
            updated = _render(file)
            if updated != file.text:
                plan.updates.append(DbtFileUpdate(file.path, file.text, updated))
    plan.matched = list(dict.fromkeys(plan.matched))
    plan.unmatched = [q for q in dict.fromkeys(plan.unmatched) if q not in plan.matched]
    plan.skipped = list(dict.fromkeys(plan.skipped))
    return plan


# ---------------------------------------------------------------------------------------
# Writing and the target
# ---------------------------------------------------------------------------------------


def _write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file in the same directory and rename it over the file:
    dbt, an editor or git never see half a file."""
    mode = stat.S_IMODE(path.stat().st_mode)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".lily", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def apply_dbt_plan(plan: DbtPlan) -> list[Path]:
    """Write the plan's files; returns them. A file changed on disk since it was planned
    (someone is editing the project) raises TargetUnavailableError: the batch is planned
    again on retry, from the new content."""
    written: list[Path] = []
    for update in plan.updates:
        if _read(update.path) != update.original:
            raise TargetUnavailableError(f"{update.path} changed while Lily was updating it")
        try:
            _write_atomic(update.path, update.updated)
        except OSError as exc:
            raise TargetUnavailableError(f"{update.path}: cannot write: {exc.strerror}") from exc
        written.append(update.path)
    return written


@dataclass(frozen=True)
class DbtSettings:
    project_dir: Path
    options: DbtOptions


@register_target("dbt")
class DbtTarget:
    """Hub metadata into a dbt project's schema.yml files.

    options: project_dir (absolute path of the project, required), match (name | meta),
    tags (default true), on_archive (ignore | tag), meta_location (config | top: where new
    `meta` and `tags` go; existing ones are updated where they are), scope (qualified-name
    prefixes; default every record).
    """

    name = "dbt"

    class Options(PluginOptions):
        project_dir: str = Field(description="The dbt project's absolute path.")
        match: Literal["name", "meta"] = Field(
            "name", description="Match models by relation name, or by `meta.atlan_qualified_name`."
        )
        tags: bool = Field(True, description="Write classifications as dbt tags.")
        on_archive: Literal["ignore", "tag"] = Field(
            "ignore", description="What an archived record does to its model: nothing, or a tag."
        )
        meta_location: Literal["config", "top"] = Field(
            "config", description="Where new `meta` and `tags` go (existing ones stay put)."
        )
        scope: Scope = Field(default_factory=list)

    def configure(self, config: TargetConfig) -> DbtSettings:
        options = parse_options(self.Options, config.model_extra)
        project_dir = Path(options.project_dir).expanduser()
        if not project_dir.is_absolute():
            raise ConfigError(f"project_dir {options.project_dir!r} must be an absolute path")
        if not (project_dir / "dbt_project.yml").is_file():
            raise ConfigError(f"project_dir {project_dir}: no dbt_project.yml there")
        parsed = DbtOptions(
            match=options.match,
            tags=options.tags,
            on_archive=options.on_archive,
            meta_location=options.meta_location,
            scope=tuple(options.scope),
        )
        return DbtSettings(project_dir, parsed)

    def deliver(self, changes: pl.DataFrame, config: DbtSettings, ctx: DeliveryContext) -> None:
        plan = plan_dbt_updates(config.project_dir, changes, config.options)
        written = apply_dbt_plan(plan)
        counts = plan.summary()
        logger.info(
            "dbt target %s (tenant %s): %d records matched, %d not in the project, "
            "%d skipped; %d edits in %d files",
            ctx.target,
            ctx.tenant,
            counts["matched"],
            counts["unmatched"],
            counts["skipped"],
            counts["edits"],
            len(written),
        )
        if plan.unmatched:
            shown = ", ".join(plan.unmatched[:10])
            more = f" and {len(plan.unmatched) - 10} more" if len(plan.unmatched) > 10 else ""
            logger.info("dbt target %s: no model or column for %s%s", ctx.target, shown, more)
