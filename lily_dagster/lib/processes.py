"""The processes a `lily` command starts, and how they end.

Every child goes through `spawn`: it runs in a process group (and session) of its own, so a
Ctrl-C at the terminal reaches `lily` alone, which then stops its children; on Linux the
kernel also sends it SIGTERM if `lily` dies without stopping it (PR_SET_PDEATHSIG, asked
for between fork and exec). `handle_signals` makes SIGTERM, SIGINT and SIGHUP stop every
registered child with all its descendants (SIGTERM to its process group, SIGKILL after a
grace period) and end the command with `SignalExit` (exit status 128 + the signal).

`DaemonPidfile` is `$LILY_HOME/run/daemon.pid`: the process group of the Dagster daemon
of a LILY_HOME (`lily run`, `lily demo`, or `lily dev`'s `dagster dev`) and the `lily`
process that owns it. The owner holds an exclusive lock on `run/daemon.lock` while it runs
(the kernel drops it when the owner dies, even by kill -9), so a second owner is refused,
and an owner that finds a pidfile with the lock free stops what is left of that group.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
GRACE_S = 10.0  # SIGTERM to SIGKILL
FORCE_EXIT_S = 30.0  # after a stop signal, the most a command takes to exit
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1


class ProcessError(RuntimeError):
    """A process cannot be started as asked (another owner runs); one line for the CLI."""


class SignalExit(BaseException):
    """Raised in the main thread by a stop signal once the children have been told to stop.
    A BaseException, like KeyboardInterrupt, so that `except Exception` does not swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


# --- /proc ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    pgid: int
    sid: int
    state: str
    start_ticks: int  # clock ticks after boot: with the pid, identifies the process

    @property
    def gone(self) -> bool:
        return self.state in ("Z", "X")  # exited (a zombie waits to be reaped)

    @property
    def started_at(self) -> float:
        return _boot_time() + self.start_ticks / _CLOCK_TICKS


def proc_info(pid: int) -> ProcInfo | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return ProcInfo(pid, int(fields[1]), int(fields[2]), int(fields[3]), fields[0], int(fields[19]))


def proc_table() -> dict[int, ProcInfo]:
    """Every process of this machine (empty where there is no /proc)."""
    table: dict[int, ProcInfo] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() and (info := proc_info(int(entry.name))) is not None:
                table[info.pid] = info
    return table


def proc_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def proc_environ(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return []


def descendants(roots: Iterable[int], table: dict[int, ProcInfo]) -> set[int]:
    """The processes below `roots` in the process tree (not the roots themselves)."""
    children: dict[int, list[int]] = {}
    for info in table.values():
        children.setdefault(info.ppid, []).append(info.pid)
    found: set[int] = set()
    stack = list(roots)
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


_boot: float | None = None


def _boot_time() -> float:
    global _boot
    if _boot is None:
        _boot = 0.0
        with contextlib.suppress(OSError):
            for line in Path("/proc/stat").read_text().splitlines():
                if line.startswith("btime "):
                    _boot = float(line.split()[1])
    return _boot


# --- children ---------------------------------------------------------------------------------


@dataclass
class _Child:
    proc: subprocess.Popen[bytes]
    pidfile: DaemonPidfile | None
    start_ticks: int | None  # with the pid, tells the child from a later process reusing it

    @classmethod
    def of(cls, proc: subprocess.Popen[bytes], pidfile: DaemonPidfile | None) -> _Child:
        info = proc_info(proc.pid)
        return cls(proc, pidfile, info.start_ticks if info else None)


_children: list[_Child] = []
_registry_lock = threading.RLock()  # a signal handler may need it mid-update


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGTERM the child when this process dies (kill -9
    included). The kernel ties it to the thread that forks: spawn from the main thread."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()

    def preexec() -> None:  # in the child, between fork and exec: nothing that may lock
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return preexec


def stop_with_parent(sig: int = signal.SIGHUP) -> None:
    """Ask Linux to send this process `sig` when its parent exits (`make run`: make killed
    by a signal it does not pass on), as if its terminal hung up; at once if it already
    has. A signal ignored here (nohup) stays ignored."""
    if not sys.platform.startswith("linux"):
        return
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    parent = os.getppid()
    prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    if os.getppid() != parent:  # it exited while we asked
        os.kill(os.getpid(), sig)


def spawn(
    args: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    pidfile: DaemonPidfile | None = None,
) -> subprocess.Popen[bytes]:
    """Start a child in a session and process group of its own, registered so that `stop`,
    `stop_all` and the stop signals end it with all its descendants. With `pidfile` (which
    the caller has acquired), its process group is recorded there."""
    with _signals_wait_for_registration():
        proc = subprocess.Popen(
            list(args),
            env=env,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            preexec_fn=_die_with_parent(),  # prctl resolved before the fork: no lock in child
        )
        with _registry_lock:
            _children.append(_Child.of(proc, pidfile))
    if pidfile is not None:
        pidfile.record(proc, list(args))
    return proc


@contextlib.contextmanager
def _signals_wait_for_registration() -> Iterator[None]:
    """A stop signal that arrives while the main thread starts a child (a signal to a whole
    process group, say, as `lily dev` starts) is raised once the child is registered:
    raised inside Popen, it would leave a child running that no one stops."""
    global _spawning, _deferred
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _spawning = True
    try:
        yield
    finally:
        _spawning = False
        signum, _deferred = _deferred, None
        if signum is not None:
            _on_signal(signum, None)


def stop(proc: subprocess.Popen[bytes], grace_s: float = GRACE_S) -> int | None:
    """Stop a child started by `spawn` and everything in its process group or below it: the
    child gets SIGTERM (and SIGCONT, for a stopped one); once it has exited, or after
    `grace_s`, whatever is left of its group and descendants gets SIGKILL. Its own children
    get the chance to stop them gracefully; what they leave is killed, not interrupted:
    Dagster's run worker interrupted by SIGTERM records a failed step, which holds its
    batches for an operator, while a killed one is a dead run that the next daemon's run
    monitoring fails and whose batches the sweep runs again. Returns the child's exit
    status (negative: the signal that ended it)."""
    with _registry_lock:
        mine = [c for c in _children if c.proc is proc] or [_Child.of(proc, None)]
    _stop(mine, grace_s)
    return proc.returncode


def stop_all(grace_s: float = GRACE_S, keep: Iterable[subprocess.Popen[bytes]] = ()) -> None:
    """Stop every child still registered but those in `keep`, together (one grace period
    for all)."""
    kept = {id(proc) for proc in keep}
    with _registry_lock:
        children = [c for c in _children if id(c.proc) not in kept]
    if children:
        _stop(children, grace_s)


def running() -> list[subprocess.Popen[bytes]]:
    with _registry_lock:
        return [c.proc for c in _children if c.proc.poll() is None]


def _stop(children: list[_Child], grace_s: float) -> None:
    targets: dict[int, int] = {}  # pid -> start ticks: a reused pid is never signalled

    def survey() -> dict[int, ProcInfo]:
        table = proc_table()
        roots, groups = set(), set()
        for child in children:
            pid = child.proc.pid
            leader = table.get(pid)
            if leader is None:  # gone; its group id stays reserved while the group has members
                groups.add(pid)
            elif leader.start_ticks == child.start_ticks:
                roots.add(pid)
                groups.add(pid)
            # else: the pid is another process now, and the group (if any) is not ours
        members = {p for p, info in table.items() if info.pgid in groups}
        for pid in descendants(roots, table) | members:
            info = table[pid]
            if not info.gone:
                targets.setdefault(pid, info.start_ticks)
        return table

    def alive(table: dict[int, ProcInfo]) -> list[int]:
        left = []
        for pid, ticks in targets.items():
            info = table.get(pid)
            if info is not None and not info.gone and info.start_ticks == ticks:
                left.append(pid)
        return left

    def kill_the_rest(table: dict[int, ProcInfo]) -> None:
        for child in children:
            if child.proc.poll() is None:  # unreaped: its pid, so its group id, is still ours
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.proc.pid, signal.SIGKILL)
        for pid in alive(table):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    table = survey()
    for child in children:
        if child.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child.proc.pid, signal.SIGTERM)
                os.killpg(child.proc.pid, signal.SIGCONT)  # a stopped one could not act on it
    deadline = time.monotonic() + grace_s
    killed = False
    while True:
        for child in children:
            child.proc.poll()  # reap; never blocks (a signal handler may be waiting too)
        table = survey()
        children_gone = all(c.proc.returncode is not None for c in children)
        if not alive(table) and children_gone:
            break
        if children_gone or time.monotonic() > deadline:
            if killed and time.monotonic() > deadline:
                break  # unkillable (uninterruptible sleep): nothing more to do
            if not killed:
                kill_the_rest(table)
                killed, deadline = True, time.monotonic() + 5
        time.sleep(0.05)
    with _registry_lock:
        for child in children:
            if child in _children:
                _children.remove(child)
            if child.pidfile is not None:
                child.pidfile.release()


# --- signals ----------------------------------------------------------------------------------
#
# Python runs a signal handler in the main thread only, and only between bytecodes: a signal
# the kernel delivers to another thread (librdkafka's, say) while the main thread blocks in a
# system call (waitpid) waits for that call to end. So the main thread waits with timeouts
# (`wait`), and a watcher thread, woken through `signal.set_wakeup_fd` by any thread that
# takes the signal, tells the children to stop at once and bounds the exit (FORCE_EXIT_S).

_state_lock = threading.RLock()
_stopping: int | None = None  # the first stop signal received
_raised = False  # SignalExit raised in the main thread
_force_timer: threading.Timer | None = None


def _terminate_now() -> None:
    """SIGTERM to every registered child (SIGCONT to its group), without waiting."""
    for proc in running():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(proc.pid, signal.SIGTERM)
            os.killpg(proc.pid, signal.SIGCONT)


def _force_exit(signum: int) -> None:
    """The main thread did not finish stopping in time (stuck in a call): SIGKILL every
    child group and exit."""
    for proc in running():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    print(f"lily: stopped by {signal.Signals(signum).name} (forced)", file=sys.stderr, flush=True)
    os._exit(128 + signum)


def _begin_stop(signum: int) -> None:
    """On the first stop signal: the children are told to stop, and the exit is bounded."""
    global _stopping, _force_timer
    with _state_lock:
        if _stopping is not None:
            return  # already stopping; stopping is bounded (SIGKILL after the grace period)
        _stopping = signum
        _force_timer = threading.Timer(FORCE_EXIT_S, _force_exit, (signum,))
        _force_timer.daemon = True
        _force_timer.start()
    _terminate_now()


_spawning = False  # the main thread is starting a child (see spawn)
_deferred: int | None = None  # a stop signal that came meanwhile


def _on_signal(signum: int, _frame: object) -> None:
    global _raised, _deferred
    if _raised:
        return
    if _spawning:
        _deferred = _deferred or signum
        return
    _raised = True
    _begin_stop(signum)
    raise SignalExit(signum)


def _watch(read_fd: int) -> None:
    while True:
        try:
            data = os.read(read_fd, 64)
        except OSError:
            break
        if not data:
            break  # closed: handle_signals is done
        for signum in data:
            if signum in STOP_SIGNALS:
                _begin_stop(signum)
    os.close(read_fd)


def wait(proc: subprocess.Popen[bytes], poll_s: float = 0.2) -> int:
    """Wait for a child in short sleeps, so that a stop signal is handled at once."""
    while proc.poll() is None:
        time.sleep(poll_s)
    return proc.returncode


@contextlib.contextmanager
def handle_signals() -> Iterator[None]:
    """While inside: SIGTERM, SIGINT and SIGHUP stop every child (`stop_all`) and raise
    `SignalExit`; on the way out every child started inside and still registered is
    stopped. A signal that is ignored on entry (SIGHUP under nohup) stays ignored. Main
    thread only; elsewhere this only stops the children on the way out."""
    global _stopping, _raised, _force_timer
    with _registry_lock:  # started before (a caller's, in a test process): not ours to stop
        earlier = [c.proc for c in _children]
    installed: dict[signal.Signals, Any] = {}
    wakeup: tuple[int, int] | None = None
    previous_wakeup = -1
    if threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            if signal.getsignal(sig) != signal.SIG_IGN:
                installed[sig] = signal.signal(sig, _on_signal)
        wakeup = os.pipe()
        os.set_blocking(wakeup[1], False)
        previous_wakeup = signal.set_wakeup_fd(wakeup[1], warn_on_full_buffer=False)
        threading.Thread(target=_watch, args=(wakeup[0],), daemon=True).start()
    pending: SignalExit | None = None
    try:
        yield
    finally:
        while True:
            try:
                stop_all(keep=earlier)
                break
            except SignalExit as exc:  # a signal during the stop: finish it, then report it
                pending = exc
        for sig, previous in installed.items():
            signal.signal(sig, previous)
        if wakeup is not None:
            signal.set_wakeup_fd(previous_wakeup)
            os.close(wakeup[1])  # the watcher reads end-of-file and returns (closing its end)
        with _state_lock:
            if _force_timer is not None:
                _force_timer.cancel()
            _stopping, _raised, _force_timer = None, False, None
    if pending is not None:
        raise pending


# --- the daemon's pidfile ---------------------------------------------------------------------

_ROLES = (
    ("dagster._daemon", "Dagster daemon"),
    ("dagster-daemon", "Dagster daemon"),
    ("api grpc", "code server"),
    ("execute_run", "run worker"),
    ("multiprocessing.spawn", "run worker"),  # how the code server starts one
    ("execute_step", "step worker"),
    ("resource_tracker", "resource tracker"),
    ("watch_orphans", "log watcher"),
    ("tail -F", "log tail"),
    ("dagster_webserver", "Dagster webserver"),
    ("dagster-webserver", "Dagster webserver"),
    ("dagster dev", "dagster dev"),
)


def describe(pid: int) -> str:
    command = " ".join(proc_cmdline(pid))
    role = next((name for key, name in _ROLES if key in command), "process")
    return f"{role} {pid}"


class DaemonPidfile:
    """`$LILY_HOME/run/daemon.pid` (JSON: the daemon's process group and command line, its
    start time, and the owning `lily` command) with its lock `run/daemon.lock`."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.path = home / "run" / "daemon.pid"
        self.lock_path = home / "run" / "daemon.lock"
        self.marker = f"LILY_HOME={home}".encode()
        self._fd: int | None = None
        self._command = "lily"

    def acquire(self, command: str) -> None:
        """Become the LILY_HOME's daemon owner: refused (ProcessError) while another owner
        runs; stops whatever a killed owner left. Release with `release` (or `stop`)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            record = self.read() or {}
            raise ProcessError(
                f"a Dagster daemon already runs for LILY_HOME {self.home} "
                f"(`{record.get('owner', 'lily')}`, pid {record.get('owner_pid', '?')}); "
                "stop it first"
            ) from None
        self._fd, self._command = fd, command
        self.stop_leftovers()

    def read(self) -> dict[str, Any] | None:
        try:
            record = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and isinstance(record.get("pgid"), int) else None

    def record(self, proc: subprocess.Popen[bytes], args: list[str]) -> None:
        info = proc_info(proc.pid)
        record = {
            "pgid": proc.pid,
            "started_at": info.started_at if info else time.time(),
            "cmdline": args,
            "lily_home": str(self.home),
            "boot_id": _boot_id(),
            "owner": self._command,
            "owner_pid": os.getpid(),
        }
        partial = self.path.with_suffix(".pid.tmp")
        partial.write_text(json.dumps(record) + "\n")
        os.replace(partial, self.path)

    def leftovers(self) -> list[int]:
        """Live processes of the recorded daemon's process group, in this LILY_HOME's
        environment and started no earlier than the daemon (the code server, run workers and
        what they started): never an unrelated process that reuses a pid. While any member
        lives the group id cannot be reused, and only processes of the daemon's session can
        join it; a live process with the daemon's pid but another start time means the
        group is gone."""
        record = self.read()
        if record is None or record.get("boot_id", _boot_id()) != _boot_id():
            return []  # none, or written before a reboot: every pid in it is another's now
        pgid, started_at = record["pgid"], float(record.get("started_at", 0))
        table = proc_table()
        leader = table.get(pgid)
        if leader is not None and abs(leader.started_at - started_at) > 0.5:
            return []  # the pid is another process's now
        found = []
        for pid, info in table.items():
            if info.pgid != pgid or info.gone or pid == os.getpid():
                continue
            if info.started_at < started_at - 0.5 or self.marker not in proc_environ(pid):
                continue
            found.append(pid)
        return found

    def stop_leftovers(self, grace_s: float = GRACE_S) -> list[int]:
        """Stop what a killed owner left of its daemon's group (saying so on stderr)."""
        record = self.read()
        pids = self.leftovers()
        if pids:
            owner = record.get("owner", "lily") if record else "lily"
            print(
                f"lily: stopping a Dagster daemon left by a killed `{owner}` for this "
                f"LILY_HOME (process group {record['pgid'] if record else '?'}: "
                f"{', '.join(describe(p) for p in sorted(pids))})",
                file=sys.stderr,
                flush=True,
            )
            identity = {p: info.start_ticks for p in pids if (info := proc_info(p))}
            # As `stop`: the daemon (the group's leader) is asked, the rest is killed.
            leader = {p: t for p, t in identity.items() if record and p == record["pgid"]}
            _signal_same(leader, signal.SIGTERM)
            _signal_same(leader, signal.SIGCONT)
            deadline = time.monotonic() + grace_s
            while _signal_same(leader, 0) and time.monotonic() < deadline:
                time.sleep(0.05)
            _signal_same(identity, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while _signal_same(identity, 0) and time.monotonic() < deadline:
                time.sleep(0.05)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        return pids

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _signal_same(identity: dict[int, int], sig: int) -> list[int]:
    """Send `sig` to each process still alive with the same start time (0: none, only
    check); returns those alive."""
    alive = []
    for pid, ticks in identity.items():
        info = proc_info(pid)
        if info is None or info.gone or info.start_ticks != ticks:
            continue
        alive.append(pid)
        if sig:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
    return alive
