"""A stop signal that arrives while `lily` starts a child (a signal to the whole process group
of `make run`, say, during `lily dev`'s start) is raised only once the child is registered,
so the child is stopped with the others instead of left running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from lily_dagster.lib import processes


def test_a_stop_signal_during_spawn_still_stops_the_new_child(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_popen = subprocess.Popen
    started: list[subprocess.Popen[bytes]] = []

    def popen_hit_by_a_signal(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = real_popen(*args, **kwargs)
        started.append(proc)
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, inside spawn
        time.sleep(0.2)
        return proc

    monkeypatch.setattr(processes.subprocess, "Popen", popen_hit_by_a_signal)
    with pytest.raises(processes.SignalExit), processes.handle_signals():
        processes.spawn([sys.executable, "-c", "import time; time.sleep(60)"])
        pytest.fail("the signal was not raised once the child was registered")
    (child,) = started
    assert child.poll() is not None, "the child started during the signal is still running"
    assert processes.running() == []
