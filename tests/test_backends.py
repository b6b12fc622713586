"""Runs the in-process suites once per Keras backend, each in a fresh process (keras fixes its backend at
import): tests/backends (models, layers, checkpoints) and tests/distribute (with 4 CPU devices for JAX)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import BACKENDS, ROOT, backend_env

SUITES = {"backends": {}, "distribute": {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("suite", SUITES)
def test_backend_suite(suite, backend):
    env = backend_env(backend)
    env["KERASBOOST_TEST_BACKEND"] = backend
    env.update(SUITES[suite])
    process = subprocess.run(
        [sys.executable, "-m", "pytest", f"tests/{suite}", "-q", "-p", "no:cacheprovider", "-n", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    summary = process.stdout.strip().splitlines()[-1] if process.stdout.strip() else ""
    assert process.returncode == 0, (
        f"{suite} on {backend}: {summary}\n{process.stdout[-6000:]}\n{process.stderr[-3000:]}"
    )
    assert " passed" in summary and "skipped" not in summary, summary
