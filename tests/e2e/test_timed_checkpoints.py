"""`checkpoint.every_minutes`, once per backend: checkpoints inside an evaluation period (on JAX, from
state synced in the middle of `fit`), and a run resumed from one of them ends equal to the bit."""

from __future__ import annotations

import shutil

import pytest
from helpers import BACKENDS, assert_bitwise_equal, explain, kerasboost, overrides

pytestmark = pytest.mark.e2e

SETTINGS = overrides(
    "train.steps=6",
    "train.eval_every=6",
    "checkpoint.every_minutes=1e-6",  # due at every step
    "checkpoint.keep=10",
    "train.steps_per_execution=1",
    "train.learning_rate=5e-3",
)


@pytest.mark.parametrize("backend", BACKENDS)
def test_timed_checkpoints_fall_inside_a_period_and_resume_exactly(backend, tmp_path):
    run = tmp_path / "run"
    process = kerasboost("run", "recipes/mlm.yaml", "--output-dir", str(run), *SETTINGS, backend=backend)
    assert process.returncode == 0, explain(process)
    names = sorted(p.name for p in (run / "checkpoints").glob("step-*"))
    assert names == [f"step-{step:08d}" for step in range(1, 7)]

    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed, ignore=shutil.ignore_patterns(".lock", "preset", "step-0000000[456]"))
    process = kerasboost(
        "run", "recipes/mlm.yaml", "--resume", "--output-dir", str(resumed), *SETTINGS, backend=backend
    )
    assert process.returncode == 0, explain(process)
    assert "at step 3" in process.stdout
    final = "checkpoints/step-00000006/model.weights.h5"
    assert_bitwise_equal(run / final, resumed / final)
