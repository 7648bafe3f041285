"""A LILY_CONFIG with the test hook package's `chaos-pause` hook (lily_test_hooks, which
`make setup` installs), for the crash tests and benchmarks/crash_recovery.py."""

from __future__ import annotations

from pathlib import Path


def chaos_pause_config(path: Path, pause_dir: Path, extra: str = "") -> Path:
    """A LILY_CONFIG with the default pre-ingest chain plus the test hook `chaos-pause`,
    which holds the first batch until the test kills its run."""
    path.write_text(
        "hooks:\n  pre_ingest:\n    - owner-normalise\n    - pii-classify\n"
        f"    - name: chaos-pause\n      settings: {{dir: {pause_dir}}}\n      timeout_s: 300\n"
        + extra
    )
    return path
