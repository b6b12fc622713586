"""Whole `kerasboost run recipes/mlm.yaml` jobs with a tiny model, once per backend, in subprocesses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import BACKENDS, explain, kerasboost, overrides, python
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util.tensor_util import make_ndarray

pytestmark = pytest.mark.e2e

SETTINGS = overrides(
    "train.steps=8",
    "train.eval_every=2",
    "checkpoint.every_steps=2",
    "checkpoint.keep=10",
    "model.config.dropout=0",
    "train.learning_rate=5e-3",
)


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def scalars(logdir: Path) -> dict[str, dict[int, float]]:
    """TensorBoard scalars read back from the event files (Keras-era summaries are tensor summaries)."""
    events = EventAccumulator(str(logdir), size_guidance={"tensors": 0})
    events.Reload()
    values = {
        tag: {event.step: make_ndarray(event.tensor_proto) for event in events.Tensors(tag)}
        for tag in events.Tags()["tensors"]
    }
    return {
        tag: {step: float(value) for step, value in steps.items()}
        for tag, steps in values.items()
        if all(v.dtype.kind == "f" for v in steps.values())
    }


@pytest.fixture(scope="module", params=BACKENDS)
def finished_run(request, tmp_path_factory):
    backend = request.param
    run = tmp_path_factory.mktemp(f"mlm-{backend}") / "run"
    process = kerasboost("run", "recipes/mlm.yaml", "--output-dir", str(run), *SETTINGS, backend=backend)
    assert process.returncode == 0, explain(process)
    return backend, run, process


def test_run_reports_backend_and_versions(finished_run):
    backend, _, process = finished_run
    assert f"backend {backend}" in process.stdout
    assert "keras 3." in process.stdout and "keras-hub 0." in process.stdout
    assert "tensorboard --logdir" in process.stdout
    assert "dropout layers use PackedDropout" in process.stdout
    # Two feed-forward layers and the MLM head (whose GELU is its backbone's).
    assert ("3 GELUs run as XLA kernels" in process.stdout) == (backend == "tensorflow")
    assert ("6 layer norms use a closed-form gradient" in process.stdout) == (backend == "tensorflow")
    assert ("8 attention projections run as one matmul" in process.stdout) == (backend == "tensorflow")
    assert ("2 attention softmaxes add their mask" in process.stdout) == (backend == "tensorflow")
    assert "oneDNN" not in process.stderr and "cuda" not in process.stderr.lower(), process.stderr


def test_validation_loss_falls(finished_run):
    _, run, _ = finished_run
    history = metrics(run)
    assert [entry["step"] for entry in history] == [0, 2, 4, 6, 8]
    assert history[-1]["val_loss"] < history[0]["val_loss"] - 0.1, history
    assert all(entry["val_perplexity"] > 1 and 0 <= entry["val_accuracy"] <= 1 for entry in history)


def test_tensorboard_holds_train_and_validation_scalars(finished_run):
    _, run, _ = finished_run
    train = scalars(run / "logs" / "train")
    assert {"loss", "learning_rate", "tokens_per_second", "perplexity"} <= set(train)
    assert sorted(train["loss"]) == list(range(1, 9))
    assert train["learning_rate"][1] == pytest.approx(5e-3)  # warm-up of 2 steps ends at step 1
    assert train["learning_rate"][8] < train["learning_rate"][4] < train["learning_rate"][2]
    validation = scalars(run / "logs" / "validation")
    assert sorted(validation["loss"]) == [0, 2, 4, 6, 8]
    assert {"accuracy", "perplexity"} <= set(validation)


def test_run_directory_layout(finished_run):
    _, run, _ = finished_run
    assert (run / "recipe.yaml").read_text().startswith("name: mlm")
    assert len((run / "vocabulary.txt").read_text().splitlines()) <= 1000
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [f"step-{s:08d}" for s in (2, 4, 6, 8)]


def test_exported_preset_reproduces_the_trained_backbone(finished_run):
    backend, run, _ = finished_run
    process = python(Path(__file__).with_name("check_export.py").read_text(), backend, str(run))
    assert process.returncode == 0 and "EXPORT OK" in process.stdout, explain(process)


def test_resume_extends_a_finished_run_and_stops_inside_a_period(finished_run, tmp_path):
    backend, run, _ = finished_run
    extended = tmp_path / "extended"
    shutil.copytree(run, extended)
    settings = [*SETTINGS, "--set", "train.steps=9"]
    process = kerasboost(
        "run", "recipes/mlm.yaml", "--resume", "--output-dir", str(extended), *settings, backend=backend
    )
    assert process.returncode == 0, explain(process)
    assert "at step 8" in process.stdout
    assert [entry["step"] for entry in metrics(extended)] == [0, 2, 4, 6, 8, 9]
    assert sorted(p.name for p in (extended / "checkpoints").iterdir())[-1] == "step-00000009"
