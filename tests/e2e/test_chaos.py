"""tools/chaos.py's quick mode on every backend: SIGKILL and SIGTERM at seeded random moments then
`--resume` (final weights bitwise equal to an uninterrupted run, dropout on), a NaN loss (stop, or skip
and count); on the first backend also a truncated newest checkpoint and a full disk. Each case lists what
did not hold."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import BACKENDS, ROOT, backend_env

pytestmark = pytest.mark.e2e

ALL_CASES = ["kill", "term", "nan", "skip", "corrupt", "disk"]
# A damaged newest checkpoint and a full disk are file handling, tested in-process on every backend
# (tests/backends/test_checkpoints.py); as whole runs they are checked here on one backend only.
FILE_CASES = ("corrupt", "disk")


@pytest.mark.parametrize("backend", BACKENDS)
def test_chaos_quick_mode_holds(backend, tmp_path):
    expected = ALL_CASES if backend == BACKENDS[0] else [case for case in ALL_CASES if case not in FILE_CASES]
    results = tmp_path / "chaos.json"
    process = subprocess.run(
        [
            sys.executable,
            "tools/chaos.py",
            "--quick",
            "--backend",
            backend,
            "--cases",
            ",".join(expected),
            "--workdir",
            str(tmp_path),
            "--json",
            str(results),
        ],
        cwd=ROOT,
        env=backend_env(None),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert results.is_file(), process.stdout[-3000:] + process.stderr[-3000:]
    cases = json.loads(results.read_text())
    assert [case["case"] for case in cases] == expected
    assert {case["case"]: case["problems"] for case in cases} == {case["case"]: [] for case in cases}, cases
    assert all(case["bitwise"] for case in cases if "bitwise" in case)
    assert process.returncode == 0
