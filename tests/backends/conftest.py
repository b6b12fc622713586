"""Tests that import keras run once per backend, each in its own pytest process.

`tests/test_backends.py` starts `pytest tests/backends` with KERASBOOST_TEST_BACKEND set to each of
tensorflow, jax and torch; without it (a plain `pytest` collecting this folder) nothing here is collected.
A module about one backend's own kernel is collected under that backend only (the suites allow no skips).
"""

import os

BACKEND = os.environ.get("KERASBOOST_TEST_BACKEND")

if BACKEND:
    from kerasboost.backend import select_backend

    select_backend(BACKEND)
    collect_ignore_glob: list[str] = [
        name for name, owner in (("test_fused_adamw.py", "tensorflow"),) if owner != BACKEND
    ]
else:
    collect_ignore_glob = ["test_*.py"]
