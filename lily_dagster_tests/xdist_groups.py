"""One xdist worker for a whole test folder (`--dist loadgroup`), so that a stack its tests
share is started once."""

from __future__ import annotations

from pathlib import Path

import pytest


def keep_on_one_worker(config: pytest.Config, items: list[pytest.Item], folder: Path) -> None:
    """Group the items under `folder` as `@<folder name>`. xdist 3.8 groups by a `@group`
    suffix it writes to `item._nodeid`, which pytest 9 no longer reads; this writes the
    suffix where pytest 9 keeps the node id. Call it from a trylast collection hook."""
    if not getattr(config.option, "loadgroup", False):
        return
    from _pytest.nodeid import NodeId

    for item in items:
        if folder in Path(str(item.path)).parents:
            item._id = NodeId.parse(f"{item.nodeid}@{folder.name}")  # type: ignore[attr-defined]
