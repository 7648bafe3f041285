"""The tamper-evident audit log: each entry chained to the one before by a hash recomputed
here independently; a changed, removed, reordered or inserted entry, or a cut line, breaks
the chain at the first bad seq; processes appending at once give one whole chain; the
receiver's writer shares fsyncs and resolves every request's future; `lily audit export`
and `verify` from the outside."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import wait
from pathlib import Path
from typing import Any

import pytest

from lily_dagster.lib import audit
from lily_dagster.lib.audit import (
    AuditError,
    AuditEvent,
    AuditLog,
    AuditWriter,
    record_operator_action,
    run_subject,
)
from lily_dagster.settings import Settings

GENESIS = "0" * 64
FIELDS = {"seq", "time", "sub", "action", "resource", "decision", "status", "prev_hash", "hash"}
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
LILY = Path(sys.executable).parent / "lily"


def event(n: int = 0, tenant: str = "acme") -> AuditEvent:
    path = f"/v1/tenants/{tenant}/assets/T{n}"
    return AuditEvent(
        sub=f"user-{n}", action="assets.get", resource=path, decision="allow", status=200
    )


def sha(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_whole_chain(path: Path) -> list[dict[str, Any]]:
    entries = lines_of(path)
    prev = GENESIS
    for seq, entry in enumerate(entries, start=1):
        assert set(entry) == FIELDS
        assert (entry["seq"], entry["prev_hash"]) == (seq, prev)
        assert entry["hash"] == sha(entry)
        assert TIME.fullmatch(entry["time"])
        prev = entry["hash"]
    return entries


def test_entries_chain_by_hash_from_seq_1(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit")
    first = log.append("acme", event(1))
    log.append_many([("acme", event(2)), (None, event(3)), ("acme", event(4))])
    denied = AuditEvent("", "assets.list", "/v1/tenants/acme/assets", "deny", 401)
    log.append("acme", denied)
    entries = assert_whole_chain(log.path("acme"))
    assert entries[0] == first and first["prev_hash"] == GENESIS
    assert [e["sub"] for e in entries] == ["user-1", "user-2", "user-4", ""]
    assert (entries[-1]["decision"], entries[-1]["status"]) == ("deny", 401)
    # Each line is the entry's canonical JSON.
    assert log.path("acme").read_text().splitlines()[0] == json.dumps(
        first, sort_keys=True, separators=(",", ":")
    )
    (global_entry,) = assert_whole_chain(tmp_path / "audit" / "_global.jsonl")
    assert global_entry["resource"] == "/v1/tenants/acme/assets/T3"
    assert stat.S_IMODE((tmp_path / "audit").stat().st_mode) == 0o700
    assert stat.S_IMODE(log.path("acme").stat().st_mode) == 0o600
    result = log.verify("acme")
    assert (result.entries, result.head, result.bad_seq) == (4, entries[-1]["hash"], None)
    assert log.verify(None).entries == 1
    assert log.verify("globex").entries == 0  # no log: nothing to break


def test_read_after_a_seq_in_a_long_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit, "_SCAN_BYTES", 1024)  # bisect down to a few lines
    log = AuditLog(tmp_path)
    log.append_many([("acme", event(n)) for n in range(2000)])
    assert [e["seq"] for e in log.read("acme", limit=3)] == [1, 2, 3]
    for since in (0, 1, 17, 999, 1000, 1999):
        entries = log.read("acme", since=since, limit=5)
        assert [e["seq"] for e in entries] == list(range(since + 1, min(since + 6, 2001)))
    assert log.read("acme", since=2000) == []
    assert len(log.read("acme", since=1500)) == 500
    assert log.read("globex") == []


def test_invalid_tenant_names_are_refused(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    for name in ("../etc", "Acme", "a/b", "_unrouted", ""):
        with pytest.raises(ValueError, match="invalid tenant"):
            log.path(name)
    assert log.path("_global") == log.path(None) == tmp_path / "_global.jsonl"


# --- tampering ------------------------------------------------------------------------------


def edit(lines: list[str]) -> None:
    entry = json.loads(lines[2])
    entry["status"] = 403
    lines[2] = json.dumps(entry, sort_keys=True, separators=(",", ":"))


def delete(lines: list[str]) -> None:
    del lines[2]


def swap(lines: list[str]) -> None:
    lines[2], lines[3] = lines[3], lines[2]


def insert_forged(lines: list[str]) -> None:
    """A forged entry 3 chained to entry 2, the later entries renumbered and their own hashes
    recomputed: the entry after the forged one still names the old entry 2 as prev."""
    before = json.loads(lines[1])
    forged: dict[str, Any] = {**json.loads(lines[2]), "sub": "mallory", "prev_hash": before["hash"]}
    forged["hash"] = sha(forged)
    later = []
    for line in lines[2:]:
        entry = json.loads(line)
        entry["seq"] += 1
        entry["hash"] = sha(entry)
        later.append(json.dumps(entry, sort_keys=True, separators=(",", ":")))
    lines[2:] = [json.dumps(forged, sort_keys=True, separators=(",", ":")), *later]


def cut_last_hash(lines: list[str]) -> None:
    lines[-1] = lines[-1][:-20]


def garble(lines: list[str]) -> None:
    lines[1] = "not json"


@pytest.mark.parametrize(
    ("tamper", "bad_seq", "reason"),
    [
        (edit, 3, "hash does not match"),
        (delete, 3, "found seq 4"),
        (swap, 3, "found seq 4"),
        (insert_forged, 4, "prev_hash"),
        (cut_last_hash, 6, "not a JSON object"),
        (garble, 2, "not a JSON object"),
    ],
    ids=lambda v: getattr(v, "__name__", None),
)
def test_tampering_breaks_the_chain_at_the_first_bad_seq(
    tamper: Callable[[list[str]], None], bad_seq: int, reason: str, tmp_path: Path
) -> None:
    log = AuditLog(tmp_path)
    log.append_many([("acme", event(n)) for n in range(6)])
    path = log.path("acme")
    lines = path.read_text().splitlines()
    tamper(lines)
    path.write_text("\n".join(lines) + "\n")
    result = log.verify("acme")
    assert result.bad_seq == bad_seq and reason in (result.reason or ""), result
    assert result.entries == bad_seq - 1
    assert result.head == (json.loads(lines[bad_seq - 2])["hash"] if bad_seq > 1 else GENESIS)


def test_a_cut_off_append_is_dropped_and_a_broken_tail_refused(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    log.append_many([("acme", event(n)) for n in range(3)])
    path = log.path("acme")
    with open(path, "a") as f:
        f.write('{"action":"assets.get","decision":"al')  # a write that never finished
    assert log.verify("acme").bad_seq == 4
    assert log.append("acme", event(9))["seq"] == 4
    assert len(assert_whole_chain(path)) == 4
    # A whole last line that is no entry is not guessed over: appends are refused.
    with open(path, "a") as f:
        f.write("garbage\n")
    with pytest.raises(AuditError, match="not an audit entry"):
        AuditLog(tmp_path).append("acme", event(10))


# --- concurrency ----------------------------------------------------------------------------


def append_from_a_process(root: str, worker: int, count: int) -> None:
    log = AuditLog(Path(root))
    for n in range(count):
        log.append("acme", event(worker * 1000 + n))


def test_processes_appending_at_once_make_one_whole_chain(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    log.append("acme", event(0))  # this process's cached head goes stale meanwhile
    spawn = multiprocessing.get_context("spawn")
    workers = [
        spawn.Process(target=append_from_a_process, args=(str(tmp_path), w, 50))
        for w in (1, 2, 3, 4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert log.append("acme", event(1))["seq"] == 202
    entries = assert_whole_chain(log.path("acme"))
    assert len(entries) == 202 and len({e["seq"] for e in entries}) == 202
    assert len({e["sub"] for e in entries[1:-1]}) == 200
    assert log.verify("acme").entries == 202


def test_readers_never_see_an_append_half_written(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    log.append("acme", event())
    appending = threading.Thread(
        target=lambda: [log.append_many([("acme", event(n))] * 20) for n in range(50)]
    )
    appending.start()
    while appending.is_alive():
        assert log.verify("acme").whole
        entries = log.read("acme", since=1)
        assert [e["seq"] for e in entries] == list(range(2, len(entries) + 2))
        assert all(line.endswith("}") for line in log.lines("acme"))
    appending.join()
    assert log.verify("acme").entries == 1001


class GatedLog(AuditLog):
    """Holds its first write until `gate` is set; records each write's batch size."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.entered, self.gate = threading.Event(), threading.Event()
        self.batches: list[int] = []

    def append_many(self, items: list[tuple[str | None, AuditEvent]]) -> list[dict[str, Any]]:
        self.entered.set()
        self.gate.wait(10)
        self.batches.append(len(items))
        return super().append_many(items)


def test_the_writer_shares_fsyncs_among_waiting_requests(tmp_path: Path) -> None:
    log = GatedLog(tmp_path)
    writer = AuditWriter(log)
    first = writer.submit("acme", event(0))
    assert log.entered.wait(10)  # the writer holds the first entry alone
    threads = [
        threading.Thread(
            target=lambda t=t: futures.extend(
                writer.submit(tenant, event(t * 100 + n, tenant or "x"))
                for n in range(10)
                for tenant in ("acme", "globex", None)
            )
        )
        for t in range(5)
    ]
    futures: list[Any] = []
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.gate.set()
    done, _ = wait([first, *futures], timeout=10)
    assert len(done) == 151
    entries = [f.result() for f in [first, *futures]]
    writer.close()
    # The first write held, the 150 waiting meanwhile went in one drain: a write per file.
    assert log.batches == [1, 50, 50, 50]
    assert [len(assert_whole_chain(log.path(t))) for t in ("acme", "globex", None)] == [51, 50, 50]
    assert sorted(e["seq"] for e in entries if "acme" in e["resource"]) == list(range(1, 52))
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit("acme", event())


def test_a_failed_write_fails_the_futures_and_the_writer_goes_on(tmp_path: Path) -> None:
    (tmp_path / "audit").write_text("a file where the folder should be")
    writer = AuditWriter(AuditLog(tmp_path / "audit"))
    with pytest.raises(OSError):
        writer.submit("acme", event()).result(10)
    (tmp_path / "audit").unlink()
    assert writer.submit("acme", event()).result(10)["seq"] == 1
    writer.close()


# --- operators ------------------------------------------------------------------------------


def test_operator_subjects(tmp_path: Path) -> None:
    assert run_subject({}) == "dagster"
    assert run_subject({"dagster/user": "ana@acme.com"}) == "dagster:ana@acme.com"
    assert run_subject({"user": "bo"}) == "dagster:bo"
    assert run_subject({"user": "bo", "lily/operator": "cli:root"}) == "cli:root"
    settings = Settings.resolve({"LILY_HOME": str(tmp_path)})
    entry = record_operator_action(settings, "acme", "dlq.replay", "dlq/hook", "succeeded")
    assert entry["sub"].startswith("cli:") and entry["decision"] == "allow"
    assert settings.audit_dir == tmp_path / "audit"
    record_operator_action(settings, "_unrouted", "quarantine.replay", "quarantine", "failed")
    assert AuditLog(settings.audit_dir).read(None)[0]["status"] == "failed"


# --- the CLI --------------------------------------------------------------------------------


def lily(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LILY_", "DAGSTER_"))}
    return subprocess.run(
        [str(LILY), "audit", *args],
        capture_output=True,
        text=True,
        env={**env, "LILY_HOME": str(home)},
        timeout=60,
    )


@pytest.mark.integration  # `lily` processes
def test_lily_audit_export_and_verify(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit")
    log.append_many([("acme", event(n)) for n in range(4)] + [(None, event(9))])
    exported = lily(tmp_path, "export", "--tenant", "acme")
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout == log.path("acme").read_text()
    verified = lily(tmp_path, "verify", "--global")
    assert verified.returncode == 0, verified.stderr
    head = lines_of(log.path(None))[-1]["hash"]
    assert json.loads(verified.stdout) == {"tenant": "_global", "entries": 1, "head": head}

    lines = log.path("acme").read_text().splitlines()
    del lines[1]
    log.path("acme").write_text("\n".join(lines) + "\n")
    broken = lily(tmp_path, "verify", "--tenant", "acme")
    assert broken.returncode == 1 and broken.stdout == ""
    (line,) = broken.stderr.splitlines()
    assert "audit log of tenant acme is broken at seq 2: found seq 3" in line

    missing = lily(tmp_path, "export", "--tenant", "globex")
    assert missing.returncode == 2 and "no audit log at" in missing.stderr
    both = lily(tmp_path, "verify", "--tenant", "acme", "--global")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def test_an_operator_action_is_decided_then_recorded_with_its_outcome(tmp_path: Path) -> None:
    from lily_dagster.lib.access.decision import Action

    settings = Settings.resolve({"LILY_HOME": str(tmp_path)})
    with audit.operator_action(settings, "acme", Action.DLQ_REPLAY, "dlq/hook", sub="cli:ops"):
        pass
    with audit.operator_action(settings, "acme", Action.DLQ_REPLAY, "dlq/hook") as action:
        action.fail()  # a replay that reported an error
    with (
        pytest.raises(RuntimeError),
        audit.operator_action(settings, "acme", Action.QUARANTINE_REPLAY, "quarantine"),
    ):
        raise RuntimeError("the replay broke")
    entries = AuditLog(settings.audit_dir).read("acme")
    assert [(e["action"], e["decision"], e["status"]) for e in entries] == [
        ("dlq.replay", "allow", "succeeded"),
        ("dlq.replay", "allow", "failed"),
        ("quarantine.replay", "allow", "failed"),
    ]
    assert entries[0]["sub"] == "cli:ops" and entries[1]["sub"].startswith("cli:")
