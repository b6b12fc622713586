"""Runs tests/backends once per Keras backend, each in a fresh process (keras fixes its backend at import)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import BACKENDS, ROOT, backend_env


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_suite(backend):
    env = backend_env(backend)
    env["KERASBOOST_TEST_BACKEND"] = backend
    process = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/backends", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    summary = process.stdout.strip().splitlines()[-1] if process.stdout.strip() else ""
    assert process.returncode == 0, f"{backend}: {summary}\n{process.stdout[-6000:]}\n{process.stderr[-3000:]}"
    assert " passed" in summary and "skipped" not in summary, summary
