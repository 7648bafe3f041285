"""One xdist worker for a whole test folder (`--dist loadgroup`), so that a stack its tests
share is started once."""

from __future__ import annotations

from pathlib import Path

import pytest


def keep_on_one_worker(
    config: pytest.Config, items: list[pytest.Item], folder: Path, fixture: str | None = None
) -> None:
    """Group the items under `folder` as `@<folder name>`; with `fixture`, only the items
    that use it (the shared stack), each other module of the folder being a group of its own
    (its module-scoped stack started once, beside the others). xdist 3.8 groups by a `@group`
    suffix it writes to `item._nodeid`, which pytest 9 no longer reads; this writes the
    suffix where pytest 9 keeps the node id. Call it from a trylast collection hook."""
    if not getattr(config.option, "loadgroup", False):
        return
    from _pytest.nodeid import NodeId

    for item in items:
        path = Path(str(item.path))
        if folder not in path.parents:
            continue
        shared = fixture is None or fixture in getattr(item, "fixturenames", ())
        group = folder.name if shared else f"{folder.name}-{path.stem}"
        item._id = NodeId.parse(f"{item.nodeid}@{group}")  # type: ignore[attr-defined]
