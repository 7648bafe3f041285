"""The generated reference pages match the code, and every environment variable Lily
reads is read in settings.py and documented there."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from lily_dagster.settings import AtlanOptions, Settings, environment_reference

ROOT = Path(__file__).resolve().parent.parent
# Modules that pass the environment on to child processes (or set it for them) rather
# than read Lily's settings from it.
# `lily atlan-emulator` hands the emulator its own variable.
PASS_THROUGH = {
    "lily_dagster/runtime.py",
    "lily_dagster/lib/broker.py",
    "lily_dagster/cli/emulator.py",
}
# A read of the environment (a write, for child processes, is not one).
READ = re.compile(r'os\.environ\.get\(|os\.getenv\(|os\.environ\["[A-Z0-9_]+"\](?!\s*=)')


def test_generated_reference_pages_are_up_to_date() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_reference.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr


def test_every_variable_read_in_settings_is_documented_and_vice_versa() -> None:
    source = (ROOT / "lily_dagster" / "settings.py").read_text()
    code = source
    read = {v for v in re.findall(r"\"((?:LILY|ATLAN)_[A-Z0-9_]+)\"", code) if not v.endswith("_")}
    read |= {v for v in re.findall(r"\b(LILY_JWT_[A-Z0-9_]*[A-Z0-9])\b", _auth_source())}
    documented = {v.name for v in environment_reference()}
    assert read - documented == set(), "read but not documented"
    assert documented - read == set(), "documented but never read"


def _auth_source() -> str:
    return (ROOT / "lily_dagster" / "lib" / "receiver" / "auth.py").read_text()


def test_no_module_reads_lily_settings_from_the_environment_itself() -> None:
    offenders = []
    for path in sorted((ROOT / "lily_dagster").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "lily_dagster/settings.py" or rel in PASS_THROUGH or "/bench/" in rel:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if READ.search(line):
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert offenders == []


def test_documented_defaults_are_the_code_defaults(tmp_path: Path) -> None:
    settings = Settings.resolve({"LILY_HOME": str(tmp_path)})
    atlan = AtlanOptions.from_env({"ATLAN_BASE_URL": "https://x", "ATLAN_API_KEY": "k"})
    checked = 0
    for var in environment_reference():
        field = var.name.removeprefix("LILY_").lower()
        owner = atlan if field.startswith("atlan_") else settings
        field = field.removeprefix("atlan_")
        documented = var.default.strip("`")
        plain = re.fullmatch(r"[\d.]+|[a-z]+|\S+://\S*", documented) and documented != "none"
        if not var.name.startswith("LILY_") or not hasattr(owner, field) or not plain:
            continue
        actual = getattr(owner, field)
        if isinstance(actual, bool):  # a switch, documented as on or off
            assert documented == ("on" if actual else "off"), var.name
        elif isinstance(actual, int | float):
            assert float(documented) == actual, var.name
        else:
            assert documented == str(actual), var.name
        checked += 1
    assert checked >= 15
