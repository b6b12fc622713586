"""The whole tree is formatted and lint-clean under the ruff settings in pyproject.toml."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import ROOT


@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]], ids=["lint", "format"])
def test_ruff(command):
    process = subprocess.run(
        [sys.executable, "-m", "ruff", *command], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert process.returncode == 0, process.stdout[-4000:] + process.stderr[-2000:]


def test_nothing_turns_off_keras_safe_mode():
    """Presets and adapters from elsewhere must never deserialise code (docs/resilience.md)."""
    unsafe = ("enable_unsafe_deserialization", "safe_mode=False", "SafeModeScope(False)")
    found = [
        f"{path.relative_to(ROOT)}: {word}"
        for path in sorted((ROOT / "kerasboost").rglob("*.py"))
        for word in unsafe
        if word in path.read_text(encoding="utf-8")
    ]
    assert found == []
