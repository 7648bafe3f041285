"""`SqliteInbox`, the embedded default inbox: one SQLite database under $LILY_HOME.

WAL mode with `synchronous=FULL` (every commit is fsynced). One writer thread owns the write
connection and commits whatever requests are waiting in one transaction (group commit), so
durability costs one fsync per burst rather than one per request. Entries get a
monotonically increasing `seq`, which the inbox sensor keeps as its cursor (positions are
the decimal seq). Duplicate `event_id`s within a tenant are stored once.
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path

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


def _connect(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute("PRAGMA busy_timeout=30000")
    return con


def _commit(con: sqlite3.Connection, batch: list[_Request]) -> None:
    """Store every request of `batch` in one transaction, then resolve their futures."""
    results: list[AppendResult] = []
    try:
        con.execute("BEGIN IMMEDIATE")
        now = time.time()
        for events, _ in batch:
            before = con.total_changes
            con.executemany(
                _INSERT,
                [(e.tenant, e.event_id, e.payload, e.source, now) for e in events],
            )
            stored = con.total_changes - before
            results.append(AppendResult(stored, len(events) - stored))
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
    def __init__(self, path: Path) -> None:
        self.path = path
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
            _commit(con, self._waiting(first))

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
        return [StoredEvent(*row) for row in rows]

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

    def close(self) -> None:
        if self._writer is not None:
            self._requests.put(None)
            self._writer.join(10)
            self._writer = None
