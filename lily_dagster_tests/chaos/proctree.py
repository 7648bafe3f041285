"""Process-tree helpers of the chaos tests, read from /proc (no psutil), independent of
`lily_dagster.lib.processes` so that they check it rather than repeat it.

Every `lily` a chaos test starts carries `LILY_CHAOS_MARK=<unique>` in its environment, which
every descendant inherits (Dagster's daemon, code servers, run workers, Tansu, uvicorn): a
process still carrying the mark after the command ended is one it left behind, whichever
session or parent it ended up in."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

LILY = Path(sys.executable).with_name("lily")
MARK_VAR = "LILY_CHAOS_MARK"


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    pgid: int
    sid: int
    state: str
    start: int  # clock ticks after boot: (pid, start) names one process

    @property
    def alive(self) -> bool:
        return self.state not in ("Z", "X")

    @property
    def cmdline(self) -> str:
        try:
            raw = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        except OSError:
            return ""
        return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def read(pid: int) -> Proc | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    f = stat.rsplit(")", 1)[1].split()
    return Proc(pid, int(f[1]), int(f[2]), int(f[3]), f[0], int(f[19]))


def table() -> dict[int, Proc]:
    procs = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (p := read(int(entry.name))) is not None:
            procs[p.pid] = p
    return procs


def still_alive(p: Proc) -> bool:
    now = read(p.pid)
    return now is not None and now.alive and now.start == p.start


def family(root: int) -> list[Proc]:
    """`root`'s descendants (by parent), and every process in a session or process group
    that one of them leads: whatever the command started, however it detached."""
    procs = table()
    children: dict[int, list[int]] = {}
    for p in procs.values():
        children.setdefault(p.ppid, []).append(p.pid)
    found: set[int] = set()
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    leaders = found | {root}
    found |= {p.pid for p in procs.values() if p.sid in leaders or p.pgid in leaders}
    found.discard(root)
    return [procs[pid] for pid in sorted(found) if procs[pid].alive]


def marked(mark: str) -> list[Proc]:
    """Live processes whose environment carries LILY_CHAOS_MARK=mark."""
    return with_env(MARK_VAR, mark)


def with_env(name: str, value: str) -> list[Proc]:
    """Live processes (this one aside) whose environment has name=value."""
    needle = f"{name}={value}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = Path(f"/proc/{entry.name}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if needle in env and (p := read(int(entry.name))) is not None and p.alive:
            found.append(p)
    return found


def describe(procs: list[Proc]) -> str:
    return "; ".join(f"{p.pid} [{p.state}] {p.cmdline[:120]}" for p in procs) or "none"


def _default_signals() -> None:
    """In the child: the stop signals at their defaults, as a terminal's foreground job has
    them (a test runner started in the background has SIGINT ignored, which `lily`, like
    any program, keeps ignored)."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


class Lily:
    """`lily ARGS…` started by a test in a session of its own (a signal sent to it reaches it
    alone, as `kill PID` does), with its output in a log file."""

    def __init__(
        self, args: list[str], env: dict[str, str], log: Path, via: list[str] | None = None
    ) -> None:
        self.args, self.log = args, log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*(via or []), str(LILY), *args],  # via: e.g. nohup, which execs lily
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_default_signals,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, ready: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"`lily {' '.join(self.args)}` exited ({self.proc.returncode}) before "
                    f"{what}; its output:\n{self.output()[-3000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"`lily {' '.join(self.args)}`: not {what} within {timeout_s:.0f} s; "
                    f"its processes: {describe(family(self.pid))}\n{self.output()[-3000:]}"
                )
            time.sleep(0.1)

    def has(self, *needles: str) -> bool:
        """Whether, for each needle, a live descendant's command line contains it."""
        lines = [p.cmdline for p in family(self.pid)]
        return all(any(n in line for line in lines) for n in needles)


@contextlib.contextmanager
def chaos_env(base: dict[str, str] | None = None) -> Iterator[tuple[dict[str, str], str]]:
    """An environment with a fresh mark; on the way out (pass or fail) every process still
    carrying the mark is killed, so that no test leaves one behind for the next."""
    mark = uuid.uuid4().hex
    env = {**(os.environ if base is None else base), MARK_VAR: mark}
    try:
        yield env, mark
    finally:
        kill_marked(mark)


def kill_marked(mark: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while (left := marked(mark)) and time.monotonic() < deadline:
        for p in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
        time.sleep(0.05)


def stop_and_check(
    lily: Lily, sig: int, mark: str, bound_s: float = 30, children: bool = True
) -> float:
    """Send `sig` to the `lily` process alone; it must exit with 128 + sig within `bound_s`,
    leaving no descendant alive (those seen just before the signal, nor any process with the
    test's mark). Returns the seconds it took."""
    before = family(lily.pid)
    if children:
        assert before, f"`lily {' '.join(lily.args)}` has no child process to stop"
    sent = time.monotonic()
    os.kill(lily.pid, sig)
    try:
        code = lily.proc.wait(bound_s)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"`lily {' '.join(lily.args)}` still runs {bound_s:.0f} s after "
            f"{signal.Signals(sig).name}; its processes: {describe(family(lily.pid))}"
        ) from None
    took = time.monotonic() - sent
    survivors = [p for p in before if still_alive(p)]
    assert not survivors, (
        f"after {signal.Signals(sig).name}, `lily {' '.join(lily.args)}` exited but left "
        f"{describe(survivors)}"
    )
    assert not marked(mark), f"processes left behind: {describe(marked(mark))}"
    assert code == 128 + sig, (
        f"exit status {code}, expected {128 + sig} (128 + {signal.Signals(sig).name}); "
        f"output:\n{lily.output()[-2000:]}"
    )
    return took
