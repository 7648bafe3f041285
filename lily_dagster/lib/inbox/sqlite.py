"""`SqliteInbox`, the embedded default inbox: one SQLite database under $LILY_HOME.

WAL mode with `synchronous=FULL` (every commit is fsynced). One writer thread owns the write
connection and commits whatever requests are waiting in one transaction (group commit), so
durability costs one fsync per burst rather than one per request. Entries get a
monotonically increasing `seq`, which the inbox sensor keeps as its cursor (positions are
the decimal seq). Duplicate `event_id`s within a tenant are stored once.

Each payload is sealed with its event's tenant cipher (sealing happens before the write
transaction starts, one key look-up per tenant and commit); rows written before
encryption was on read as they are. Erasing or forgetting rewrites rows with SQLite's
`secure_delete` on and truncates the write-ahead log, so the old bytes stay in neither file.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import sqlite3
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path

from lily_dagster.lib.crypto import Ciphers, plaintext
from lily_dagster.lib.gdpr.payload import scrub_payload
from lily_dagster.lib.gdpr.subject import Subject
from lily_dagster.lib.inbox.base import (
    AppendResult,
    InboxEvent,
    InboxPage,
    StoredEvent,
    completed,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    event_id TEXT NOT NULL,
    payload BLOB NOT NULL,
    source TEXT NOT NULL,
    received_at REAL NOT NULL,
    UNIQUE (tenant, event_id)
);
CREATE TABLE IF NOT EXISTS consumer (name TEXT PRIMARY KEY, seq INTEGER NOT NULL);
"""


_INSERT = (
    "INSERT OR IGNORE INTO inbox (tenant, event_id, payload, source, received_at) "
    "VALUES (?, ?, ?, ?, ?)"
)

_Request = tuple[Sequence[InboxEvent], Future[AppendResult]]
_PAGE = 10_000  # rows an erasure reads at a time


def _connect(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute("PRAGMA busy_timeout=30000")
    return con


def _commit(con: sqlite3.Connection, batch: list[_Request], ciphers: Ciphers) -> None:
    """Store every request of `batch` in one transaction, then resolve their futures."""
    results: list[AppendResult] = []
    try:
        cipher = functools.cache(ciphers)  # a key look-up costs a stat(): once per tenant
        sealed = [
            [
                (e.tenant, e.event_id, cipher(e.tenant).seal_bytes(e.payload), e.source)
                for e in events
            ]
            for events, _ in batch
        ]
        con.execute("BEGIN IMMEDIATE")
        now = time.time()
        for rows in sealed:
            before = con.total_changes
            con.executemany(_INSERT, [(*row, now) for row in rows])
            stored = con.total_changes - before
            results.append(AppendResult(stored, len(rows) - stored))
        con.execute("COMMIT")
    except Exception as exc:  # e.g. disk full: every waiting request fails, none is lost silently
        with contextlib.suppress(sqlite3.Error):
            con.execute("ROLLBACK")
        for _, future in batch:
            future.set_exception(exc)
        return
    for (_, future), result in zip(batch, results, strict=True):
        future.set_result(result)


class SqliteInbox:
    def __init__(self, path: Path, ciphers: Ciphers = plaintext) -> None:
        self.path = path
        self.ciphers = ciphers
        path.parent.mkdir(parents=True, exist_ok=True)
        with _connect(path) as con:
            con.executescript(_SCHEMA)
        self._requests: queue.Queue[_Request | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        self._read = threading.local()
        self._start_lock = threading.Lock()

    def _ensure_writer(self) -> None:
        if self._writer is None:
            with self._start_lock:
                if self._writer is None:
                    self._writer = threading.Thread(
                        target=self._write_loop, name="inbox-writer", daemon=True
                    )
                    self._writer.start()

    def append(self, events: Sequence[InboxEvent]) -> Future[AppendResult]:
        if not events:
            return completed(AppendResult(0, 0))
        future: Future[AppendResult] = Future()
        self._ensure_writer()
        self._requests.put((events, future))
        return future

    def _waiting(self, first: _Request) -> list[_Request]:
        """`first` and every request already waiting (group commit)."""
        batch = [first]
        while True:
            try:
                item = self._requests.get_nowait()
            except queue.Empty:
                return batch
            if item is None:
                self._requests.put(None)  # the stop sentinel, for the next loop
                return batch
            batch.append(item)

    def _write_loop(self) -> None:
        con = _connect(self.path)
        while True:
            first = self._requests.get()
            if first is None:
                con.close()
                return
            _commit(con, self._waiting(first), self.ciphers)

    def _reader(self) -> sqlite3.Connection:
        con: sqlite3.Connection | None = getattr(self._read, "con", None)
        if con is None:
            con = _connect(self.path)
            self._read.con = con
        return con

    def read_after(self, seq: int, limit: int) -> list[StoredEvent]:
        rows = self._reader().execute(
            "SELECT seq, tenant, event_id, payload, source, received_at FROM inbox "
            "WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        )
        cipher = functools.cache(self.ciphers)
        return [
            StoredEvent(seq, tenant, event_id, cipher(tenant).open_bytes(payload), source, at)
            for seq, tenant, event_id, payload, source, at in rows
        ]

    def last_seq(self) -> int:
        row = self._reader().execute("SELECT COALESCE(MAX(seq), 0) FROM inbox").fetchone()
        return int(row[0])

    def depth_after(self, seq: int) -> int:
        row = self._reader().execute("SELECT COUNT(*) FROM inbox WHERE seq > ?", (seq,)).fetchone()
        return int(row[0])

    # The generic Inbox interface: positions are the decimal seq.
    def read(self, after: str | None, limit: int) -> InboxPage:
        events = self.read_after(int(after or 0), limit)
        return InboxPage(events, str(events[-1].seq) if events else None)

    def pending(self, after: str | None) -> int:
        return self.depth_after(int(after or 0))

    def position(self) -> str | None:
        return str(self.last_seq())

    def consumer_cursor(self) -> str | None:
        row = self._reader().execute("SELECT seq FROM consumer WHERE name = 'sensor'").fetchone()
        return str(row[0]) if row else None

    def set_consumer_cursor(self, cursor: str) -> None:
        self._reader().execute(
            "INSERT INTO consumer (name, seq) VALUES ('sensor', ?) "
            "ON CONFLICT (name) DO UPDATE SET seq = MAX(seq, excluded.seq)",
            (int(cursor),),
        )

    def erase_subject(self, tenant: str, subject: Subject, dry_run: bool = False) -> int:
        """Erase `subject` from the payloads of the tenant's events; how many mentioned it
        (dry_run: would be rewritten). The rows are read a page at a time outside any
        transaction (the receiver keeps writing) and rewritten in one."""
        cipher = self.ciphers(tenant)
        updates: list[tuple[bytes, int]] = []
        after = 0
        while (
            rows := self._reader()
            .execute(
                "SELECT seq, payload FROM inbox WHERE tenant = ? AND seq > ? ORDER BY seq LIMIT ?",
                (tenant, after, _PAGE),
            )
            .fetchall()
        ):
            for seq, payload in rows:
                scrubbed = scrub_payload(subject, cipher.open_bytes(payload))
                if scrubbed is not None:
                    updates.append((cipher.seal_bytes(scrubbed), seq))
            after = rows[-1][0]
        if updates and not dry_run:
            self._rewrite("UPDATE inbox SET payload = ? WHERE seq = ?", updates)
        return len(updates)

    def forget_tenant(self, tenant: str) -> int:
        """Delete every event of the tenant; how many there were."""
        return self._rewrite("DELETE FROM inbox WHERE tenant = ?", [(tenant,)])

    def _rewrite(self, sql: str, params: Sequence[tuple[object, ...]]) -> int:
        """Run `sql` for each of `params` in one transaction; the rows it changed. The old
        bytes are zeroed (secure_delete), and the checkpoint copies the new pages over the
        old ones and empties the write-ahead log."""
        con = _connect(self.path)
        try:
            con.execute("PRAGMA secure_delete=ON")
            con.execute("BEGIN IMMEDIATE")
            before = con.total_changes
            con.executemany(sql, params)
            changed = con.total_changes - before
            con.execute("COMMIT")
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            con.close()  # an exception before COMMIT: closing rolls back
        return changed

    def close(self) -> None:
        if self._writer is not None:
            self._requests.put(None)
            self._writer.join(10)
            self._writer = None
