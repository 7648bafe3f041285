"""The tamper-evident audit log (CONTRACT.md §6): a JSON Lines file per tenant under
$LILY_HOME/audit/ (and `_global.jsonl` for what names no tenant), one entry per request or
operator action, each chained to the one before by its hash.

An entry is `{"seq", "time", "sub", "action", "resource", "decision", "status", "prev_hash",
"hash"}`: seq from 1, the first prev_hash 64 zeros, hash the SHA-256 hex of the canonical
JSON (sorted keys, no spaces) of every other field. A line is that canonical JSON.

Several processes append to one file at once (the receiver, Dagster runs, the CLI): each
batch of appends holds an exclusive flock on the file, chains from its last line (read from
the tail, or from a cache when nothing else wrote since) and is fsync'ed before it returns.
`AuditWriter` shares one fsync among the requests of the HTTP server waiting at a moment.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import os
import queue
import re
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from lily_dagster.lib.access.decision import Action, decide, operator
from lily_dagster.lib.durable import fsync_dir
from lily_dagster.settings import is_tenant

if TYPE_CHECKING:
    from lily_dagster.settings import Settings

AUDIT_GLOBAL = "_global"
GENESIS = "0" * 64
FIELDS = frozenset(
    {"seq", "time", "sub", "action", "resource", "decision", "status", "prev_hash", "hash"}
)
DECISIONS = ("allow", "deny")
# The run tag naming the operator on whose behalf a run was launched (`lily quarantine
# replay`); Dagster+ names the UI's user in `dagster/user`.
OPERATOR_TAG = "lily/operator"
_USER_TAGS = ("dagster/user", "user")

_TAIL_BYTES = 16 * 1024  # more than an entry: the last line is found in one read
_SCAN_BYTES = 64 * 1024  # `read` bisects a file down to this much, then scans it
_SEQ = re.compile(rb'"seq":(\d+)[,}]')  # in a canonical line, only the key can match
_HEX64 = re.compile(r"[0-9a-f]{64}")
_APPEND_FLAGS = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW

# (st_dev, st_ino) -> ((st_size, st_mtime_ns), (seq, hash)) of the files this process wrote:
# when the file is as this process left it, its last entry need not be read again.
_heads: dict[tuple[int, int], tuple[tuple[int, int], tuple[int, str]]] = {}


class AuditError(RuntimeError):
    pass


@dataclass(frozen=True)
class AuditEvent:
    sub: str
    action: str
    resource: str
    decision: str
    status: int | str

    def __post_init__(self) -> None:
        if self.decision not in DECISIONS:
            raise ValueError(f"audit decision must be allow or deny, not {self.decision!r}")
        if isinstance(self.status, bool) or not isinstance(self.status, int | str):
            raise ValueError(f"audit status must be an int or a str, not {self.status!r}")


@dataclass(frozen=True)
class VerifyResult:
    """`entries` and `head` (the last hash) of the whole part of the chain; `bad_seq`, the
    seq the first entry out of place should have had (its line number), and why."""

    entries: int
    head: str
    bad_seq: int | None = None
    reason: str | None = None

    @property
    def whole(self) -> bool:
        return self.bad_seq is None


def canonical(value: Mapping[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def entry_hash(entry: Mapping[str, Any]) -> str:
    """The hash of an entry: of every field but `hash`, prev_hash included."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(canonical(body).encode()).hexdigest()


def _entry(seq: int, prev: str, event: AuditEvent) -> tuple[dict[str, Any], str]:
    """The entry after `prev`, and its line (the whole entry, canonical JSON)."""
    entry: dict[str, Any] = {
        "seq": seq,
        "time": utc_now(),
        "sub": event.sub,
        "action": event.action,
        "resource": event.resource,
        "decision": event.decision,
        "status": event.status,
        "prev_hash": prev,
    }
    body = canonical(entry)
    entry["hash"] = hashlib.sha256(body.encode()).hexdigest()
    return entry, canonical(entry) + "\n"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def operator_subject() -> str:
    """The subject of an operator action from the CLI: `cli:<os user>`."""
    return f"cli:{getpass.getuser()}"


def run_subject(tags: Mapping[str, str]) -> str:
    """The subject of an operator action a Dagster run did: the operator the CLI named,
    else `dagster:<ui user>` when the UI's user is known, else `dagster`."""
    if tags.get(OPERATOR_TAG):
        return tags[OPERATOR_TAG]
    user = next((tags[t] for t in _USER_TAGS if tags.get(t)), None)
    return f"dagster:{user}" if user else "dagster"


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _head_of(line: bytes) -> tuple[int, str] | None:
    """(seq, hash) of a line that looks like an entry."""
    entry = _parse(line)
    if entry is None:
        return None
    seq, digest = entry.get("seq"), entry.get("hash")
    if type(seq) is not int or not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        return None
    return seq, digest


def _problem(entry: dict[str, Any] | None, seq: int, prev: str) -> str | None:
    """Why a line (parsed: None when it is no JSON object) is not entry `seq` following the
    entry whose hash is `prev` (None: it is)."""
    if entry is None:
        return "the line is not a JSON object"
    if set(entry) != FIELDS:
        return f"the line has the fields {sorted(entry)}, not an audit entry's"
    if type(entry["seq"]) is not int or entry["seq"] != seq:
        return f"found seq {entry['seq']!r} there (an entry is missing, moved or inserted)"
    if entry["prev_hash"] != prev:
        return "its prev_hash is not the hash of the entry before it"
    if entry["hash"] != entry_hash(entry):
        return "its hash does not match its content (the entry was changed)"
    return None


def _last_line(fd: int, size: int) -> tuple[bytes, int]:
    """The file's last line (with its newline; without when the line is torn) and where it
    starts, read from the tail."""
    window = _TAIL_BYTES
    while True:
        start = max(0, size - window)
        data = os.pread(fd, size - start, start)
        cut = data.rfind(b"\n", 0, max(0, len(data) - 1))
        if cut >= 0 or start == 0:
            return data[cut + 1 :], start + cut + 1
        window *= 4


def _write_all(fd: int, data: bytes, size: int) -> None:
    """Append `data` to a file of `size` bytes: all of it, or nothing (cut back on error)."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.ftruncate(fd, size)
        raise


def _settled_lines(f: IO[bytes]) -> Iterator[bytes]:
    """The file's lines as they are between two appends: its size is taken under a shared
    lock (no append half written), then the lines up to it are read without holding it."""
    fcntl.flock(f, fcntl.LOCK_SH)
    try:
        size = os.fstat(f.fileno()).st_size
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
    for line in f:
        if size <= 0:
            return
        size -= len(line)
        yield line


def _first_after(f: IO[bytes], size: int, since: int) -> int:
    """A line start before every entry after `since`, and after most entries up to it: a
    bisection over byte offsets (seqs grow down the file) down to _SCAN_BYTES."""
    lo, hi = 0, size  # lines starting before lo: seq <= since; from hi on: seq > since
    while since > 0 and hi - lo > _SCAN_BYTES:
        mid = (lo + hi) // 2
        f.seek(mid - 1)
        f.readline()
        start = f.tell()  # the first line start at or after mid
        if start >= hi:
            hi = mid
            continue
        line = f.readline()
        match = _SEQ.search(line)
        if match is None:
            break  # not an entry: scan from lo
        if int(match[1]) <= since:
            lo = f.tell()
        else:
            hi = start
    return lo


class AuditLog:
    """The audit logs under `root`: `<tenant>.jsonl`, and `_global.jsonl` (tenant None)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, tenant: str | None) -> Path:
        name = AUDIT_GLOBAL if tenant is None else tenant
        if name != AUDIT_GLOBAL and not is_tenant(name):
            raise ValueError(f"invalid tenant {name!r} for an audit log")
        return self.root / f"{name}.jsonl"

    def append(self, tenant: str | None, event: AuditEvent) -> dict[str, Any]:
        """Append one entry; it is on disk (fsync'ed) when this returns."""
        return self.append_many([(tenant, event)])[0]

    def append_many(self, items: list[tuple[str | None, AuditEvent]]) -> list[dict[str, Any]]:
        """Append entries, in order, to their logs: one lock and one fsync per file. The
        entries, in the order of `items`."""
        by_path: dict[Path, list[int]] = {}
        for index, (tenant, _) in enumerate(items):
            by_path.setdefault(self.path(tenant), []).append(index)
        entries: dict[int, dict[str, Any]] = {}
        for path, indexes in by_path.items():
            written = self._append(path, [items[i][1] for i in indexes])
            entries.update(zip(indexes, written, strict=True))
        return [entries[i] for i in range(len(items))]

    def _append(self, path: Path, events: list[AuditEvent]) -> list[dict[str, Any]]:
        if not self.root.is_dir():
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, _APPEND_FLAGS, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released by the close
            seq, prev, size = self._head(fd, path)
            entries, lines = [], []
            for event in events:
                seq += 1
                entry, line = _entry(seq, prev, event)
                prev = entry["hash"]
                entries.append(entry)
                lines.append(line)
            _write_all(fd, "".join(lines).encode(), size)
            os.fsync(fd)
            if size == 0:
                fsync_dir(self.root)  # the new file's name is durable too
            stat = os.fstat(fd)
            _heads[(stat.st_dev, stat.st_ino)] = ((stat.st_size, stat.st_mtime_ns), (seq, prev))
            return entries
        finally:
            os.close(fd)

    def _head(self, fd: int, path: Path) -> tuple[int, str, int]:
        """(seq, hash) of the file's last entry, and the file's size; under the lock."""
        stat = os.fstat(fd)
        cached = _heads.get((stat.st_dev, stat.st_ino))
        if cached is not None and cached[0] == (stat.st_size, stat.st_mtime_ns):
            return (*cached[1], stat.st_size)
        size = stat.st_size
        line, start = _last_line(fd, size)
        if line and not line.endswith(b"\n"):
            if _head_of(line) is None:  # a write cut off (never acknowledged): drop it
                os.ftruncate(fd, start)
                size = start
                line, start = _last_line(fd, size)
            else:  # a whole entry that lost its newline
                _write_all(fd, b"\n", size)
                size += 1
        if not line:
            return 0, GENESIS, size
        head = _head_of(line)
        if head is None:
            raise AuditError(
                f"the last line of {path} is not an audit entry; see `lily audit verify`"
            )
        return (*head, size)

    def read(
        self, tenant: str | None, since: int = 0, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """The entries with a seq above `since`, in file order (at most `limit`). A line
        that is not an entry is skipped: `verify` says whether the chain is whole."""
        try:
            f = open(self.path(tenant), "rb")  # noqa: SIM115 (closed below)
        except FileNotFoundError:
            return []
        entries: list[dict[str, Any]] = []
        with f:
            f.seek(_first_after(f, os.fstat(f.fileno()).st_size, since))
            for line in f:
                if (limit is not None and len(entries) >= limit) or not line.endswith(b"\n"):
                    break  # enough, or an append half written
                match = _SEQ.search(line)
                if match is not None and int(match[1]) <= since:
                    continue
                entry = _parse(line)
                if entry is not None and type(entry.get("seq")) is int and entry["seq"] > since:
                    entries.append(entry)
        return entries

    def lines(self, tenant: str | None) -> Iterator[str]:
        """The log's lines as they are stored (none when there is no log)."""
        try:
            f = open(self.path(tenant), "rb")  # noqa: SIM115 (closed below)
        except FileNotFoundError:
            return
        with f:
            for line in _settled_lines(f):
                yield line.rstrip(b"\n").decode(errors="replace")

    def verify(self, tenant: str | None) -> VerifyResult:
        """Walk the chain: the first line that is not the entry due there breaks it."""
        try:
            f = open(self.path(tenant), "rb")  # noqa: SIM115 (closed below)
        except FileNotFoundError:
            return VerifyResult(0, GENESIS)
        seq, head = 0, GENESIS
        with f:
            for line in _settled_lines(f):
                entry = _parse(line)
                problem = _problem(entry, seq + 1, head)
                if entry is None or problem is not None:
                    return VerifyResult(seq, head, seq + 1, problem)
                seq, head = seq + 1, entry["hash"]
        return VerifyResult(seq, head)


class AuditWriter:
    """Group commit for the HTTP server: `submit` (or `submit_many`) queues entries; one
    thread writes all that wait at a moment (one fsync per file), then resolves their
    futures, one per submission."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log
        self._queue: queue.SimpleQueue[_Submission | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="lily-audit-writer", daemon=True)
        self._thread.start()

    def submit(self, tenant: str | None, event: AuditEvent) -> Future[dict[str, Any]]:
        future: Future[dict[str, Any]] = Future()
        self._put(_Submission([(tenant, event)], future, single=True))
        return future

    def submit_many(
        self, items: list[tuple[str | None, AuditEvent]]
    ) -> Future[list[dict[str, Any]]]:
        """The entries of `items`, in order, as one future: a caller batching on an event
        loop is woken once per batch, not once per entry."""
        future: Future[list[dict[str, Any]]] = Future()
        self._put(_Submission(items, future, single=False))
        return future

    def _put(self, submission: _Submission) -> None:
        for tenant, _ in submission.items:
            self.log.path(tenant)  # an invalid tenant is refused here, not in the batch
        with self._lock:
            if self._closed:
                raise RuntimeError("the audit writer is closed")
            self._queue.put(submission)

    def close(self) -> None:
        """Write what is queued, then stop."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            by_tenant: dict[str | None, list[tuple[_Submission, int]]] = {}
            for submission in batch:
                if submission is not None:
                    for index, (tenant, _) in enumerate(submission.items):
                        by_tenant.setdefault(tenant, []).append((submission, index))
            for tenant, places in by_tenant.items():
                self._write(tenant, places)
            for submission in batch:
                if submission is not None:
                    submission.settle()
            if None in batch:
                return

    def _write(self, tenant: str | None, places: list[tuple[_Submission, int]]) -> None:
        """One tenant's entries of a batch; a failed write fails the submissions in it (the
        other tenants' are written all the same)."""
        try:
            entries = self.log.append_many([(tenant, s.items[i][1]) for s, i in places])
        except Exception as exc:
            for submission, _ in places:
                submission.error = exc
            return
        for (submission, index), entry in zip(places, entries, strict=True):
            submission.entries[index] = entry


@dataclass
class _Submission:
    items: list[tuple[str | None, AuditEvent]]
    future: Future[Any]
    single: bool
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.entries: list[dict[str, Any] | None] = [None] * len(self.items)

    def settle(self) -> None:
        # A request given up on (cancelled) is still recorded; its future just gets nothing.
        if not self.future.set_running_or_notify_cancel():
            return
        if self.error is not None:
            self.future.set_exception(self.error)
        else:
            self.future.set_result(self.entries[0] if self.single else self.entries)


class OperatorActionDeniedError(PermissionError):
    """The policy decision point refused an operator action (recorded as `deny`)."""


@dataclass
class OperatorAction:
    """An operator action under way (`operator_action`): `fail()` records it as failed
    without an exception (a replay that reports its error)."""

    status: str = "succeeded"

    def fail(self) -> None:
        self.status = "failed"


@contextmanager
def operator_action(
    settings: Settings,
    tenant: str,
    action: Action,
    resource: str,
    sub: str | None = None,
    global_log: bool = False,
) -> Iterator[OperatorAction]:
    """Asks the policy decision point whether the operator (`sub`: the CLI's user unless
    given) may take `action` on `tenant`, runs the block if so, and records one entry:
    `deny`, or `allow` with the block's outcome (failed when it raised or called `fail`),
    in the tenant's log (`global_log`: the global one, for an action that removes it)."""
    subject = sub or operator_subject()
    log = None if global_log else tenant
    decision = decide(operator(subject), action, tenant)
    if not decision.allowed:
        record_operator_action(settings, log, action, resource, "refused", subject, "deny")
        raise OperatorActionDeniedError(f"{action} on {tenant!r}: {decision.detail}")
    outcome = OperatorAction()
    try:
        yield outcome
    except BaseException:
        outcome.fail()
        raise
    finally:
        record_operator_action(settings, log, action, resource, outcome.status, subject)


def record_operator_action(
    settings: Settings,
    tenant: str | None,
    action: str,
    resource: str,
    status: str,
    sub: str | None = None,
    decision: str = "allow",
) -> dict[str, Any]:
    """One operator action (`quarantine.replay`, `dlq.replay`, ...) in the tenant's log:
    `status` succeeded or failed; `sub` the CLI's user unless given. A name that is no
    valid tenant (`_unrouted`) has the global log."""
    event = AuditEvent(sub or operator_subject(), str(action), resource, decision, status)
    log = tenant if tenant is not None and is_tenant(tenant) else None
    return AuditLog(settings.audit_dir).append(log, event)
