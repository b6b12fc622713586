"""Checkpoints: model and optimizer weights plus the step, written atomically, the newest few kept."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras

_WEIGHTS = "model.weights.h5"
_STATE = "state.json"


def save_checkpoint(model: keras.Model, directory: Path, step: int, keep: int) -> Path:
    """Writes checkpoints/step-NNNNNNNN/ via a temporary directory, so a crash never leaves half a checkpoint."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"step-{step:08d}"
    partial = directory / f".step-{step:08d}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    model.save_weights(str(partial / _WEIGHTS))
    (partial / _STATE).write_text(json.dumps({"step": step}) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    for old in _checkpoints(directory)[:-keep]:
        shutil.rmtree(old)
    return final


def latest_checkpoint(directory: Path) -> tuple[Path, int] | None:
    found = _checkpoints(directory)
    if not found:
        return None
    return found[-1], json.loads((found[-1] / _STATE).read_text())["step"]


def restore_checkpoint(model: keras.Model, checkpoint: Path) -> None:
    """Loads model and optimizer state; the optimizer must be built first so its slots exist."""
    model.optimizer.build(model.trainable_variables)
    model.load_weights(str(checkpoint / _WEIGHTS))


def load_weights(model: keras.Model, checkpoint: Path) -> None:
    """Loads only the model's weights (before compiling: no optimizer state is looked for)."""
    model.load_weights(str(checkpoint / _WEIGHTS))


def _checkpoints(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(path for path in directory.glob("step-*") if (path / _STATE).is_file())
