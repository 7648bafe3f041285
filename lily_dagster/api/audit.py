"""The audit trail of the receiver's tenant routes (CONTRACT.md §6): one entry per request
to `/v1/...`, refused ones included, written durably before the response starts.

Pure ASGI: the response's start is held until its entry is stored. Entries are batched on
the event loop: while one batch is written (one fsync), the next gathers, and each batch
wakes the loop once. The route's dependencies leave what
they learnt in the request's state: the tenant, the action, the token's subject, the
decision.
"""

from __future__ import annotations

import asyncio
from typing import Any

from lily_dagster.lib.audit import AuditEvent, AuditWriter

AUDITED_PREFIX = "/v1/"


def _action_of(path: str, method: str) -> str:
    """An action for a request no route claimed (an unknown path or method)."""
    return f"{method.lower()} {path}"


class AuditTrail:
    def __init__(self, app: Any, writer: AuditWriter) -> None:
        self.app = app
        self.writer = writer
        self._pending: list[tuple[str | None, AuditEvent, asyncio.Future[Any]]] = []
        self._flushing = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith(AUDITED_PREFIX):
            await self.app(scope, receive, send)
            return
        notes: dict[str, Any] = scope.setdefault("state", {})

        async def send_after_entry(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                await self._record(path, scope.get("method", ""), notes, message["status"])
            await send(message)

        await self.app(scope, receive, send_after_entry)

    async def _record(self, path: str, method: str, notes: dict[str, Any], status: int) -> None:
        decision = notes.get("audit_decision") or ("allow" if status < 400 else "deny")
        event = AuditEvent(
            sub=str(notes.get("audit_sub", "")),
            action=str(notes.get("audit_action") or _action_of(path, method)),
            resource=path,
            decision=decision,
            status=status,
        )
        # The tenant the route read from its path (dependencies.path_tenant); a request no
        # route took, or naming no valid tenant, goes to the global log.
        tenant = notes.get("audit_tenant")
        written: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((tenant, event, written))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush())
        await written

    async def _flush(self) -> None:
        """Write what is pending, batch after batch, until nothing is."""
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    entries = await asyncio.wrap_future(
                        self.writer.submit_many([(tenant, event) for tenant, event, _ in batch])
                    )
                except Exception as exc:  # every waiting request fails with it (a 500)
                    for _, _, written in batch:
                        if not written.done():
                            written.set_exception(exc)
                    continue
                for (_, _, written), entry in zip(batch, entries, strict=True):
                    if not written.done():
                        written.set_result(entry)
        finally:
            self._flushing = False
