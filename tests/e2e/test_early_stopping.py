"""Early stopping and the best checkpoint in whole runs, once per backend: the run stops at the right
evaluation, records why and which step was best, exports the best step's weights, and a run resumed inside
the patience window decides exactly as the uninterrupted one.

Scripted so that the outcome does not hang on how a tiny model happens to train: early stopping on
val_loss with a min_delta no evaluation can beat (patience 2: the run stops at its third evaluation), the
best checkpoint by the learning rate (highest right after warm-up: the first evaluation)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import BACKENDS, assert_bitwise_equal, explain, kerasboost, overrides, python

pytestmark = pytest.mark.e2e

SETTINGS = overrides(
    "train.steps=20",
    "train.eval_every=2",
    "checkpoint.every_steps=2",
    "checkpoint.keep=10",
    "train.learning_rate=5e-3",
    "train.early_stopping={metric: val_loss, mode: min, patience: 2, min_delta: 100}",
    "checkpoint.best={metric: learning_rate, mode: max}",
)


@pytest.fixture(scope="module", params=BACKENDS)
def stopped_run(request, tmp_path_factory):
    run = tmp_path_factory.mktemp(f"early-{request.param}") / "run"
    process = kerasboost("run", "recipes/mlm.yaml", "--output-dir", str(run), *SETTINGS, backend=request.param)
    assert process.returncode == 0, explain(process)
    return request.param, run, process


def test_the_run_stops_at_the_third_evaluation_and_says_why(stopped_run):
    _, run, process = stopped_run
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 2, 4, 6]
    outcome = json.loads((run / "outcome.json").read_text())
    assert outcome["final_step"] == 6 and outcome["stopped"].startswith("early stopping at step 6: val_loss")
    assert outcome["early_stopping"]["step"] == 2 and outcome["best"]["step"] == 2
    assert "early stopping at step 6" in process.stdout and "best checkpoint: learning_rate" in process.stdout
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == [f"step-{s:08d}" for s in (2, 4, 6)]
    assert [p.name for p in (run / "checkpoints" / "best").iterdir()] == ["step-00000002"]


def test_exports_are_the_best_steps_weights(stopped_run):
    backend, run, _ = stopped_run
    process = python(Path(__file__).with_name("check_export.py").read_text(), backend, str(run), "2")
    assert process.returncode == 0 and "EXPORT OK" in process.stdout, explain(process)


def test_resume_inside_the_patience_window_decides_the_same(stopped_run, tmp_path):
    backend, run, _ = stopped_run
    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed, ignore=shutil.ignore_patterns(".lock", "step-00000006", "preset", "outcome.json"))
    process = kerasboost(
        "run", "recipes/mlm.yaml", "--resume", "--output-dir", str(resumed), *SETTINGS, backend=backend
    )
    assert process.returncode == 0, explain(process)
    assert "at step 4" in process.stdout
    assert json.loads((resumed / "outcome.json").read_text()) == json.loads((run / "outcome.json").read_text())
    final = "checkpoints/step-00000006/model.weights.h5"
    assert_bitwise_equal(run / final, resumed / final)
