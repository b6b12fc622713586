"""Checkpoints: everything that decides the next step, written durably, verified when read.

checkpoints/step-NNNNNNNN/
    model.weights.h5    model and optimizer variables (Keras' weights file)
    state.json          the step, the random state of every `SeedGenerator` (dropout's: Keras' weights
                        file leaves them out, so a resumed run would drop other units) and the backend's
                        global generator where one is drawn from (backend.global_random_state)
    manifest.json       every other file's size and SHA-256, written last

A checkpoint is written into `.step-N.partial/`, each file fsync'd, the directory fsync'd, then renamed
and the parent fsync'd: after a crash or a power cut there is either the whole checkpoint or none. Reading
verifies the manifest; `newest_intact` passes over a damaged checkpoint with a one-line warning and takes
the next older one. Before writing, the free space is checked against the size of the variables, so a
full disk is a one-line error instead of HDF5's half-written file (h5py reports ENOSPC from destructors).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from kerasboost.backend import global_random_state, restore_global_random_state
from kerasboost.errors import RunFailure

_WEIGHTS = "model.weights.h5"
_STATE = "state.json"
_MANIFEST = "manifest.json"
_HEADROOM = 1.1  # HDF5's own structure on top of the raw variable bytes, with room to spare


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int
    state: dict = field(default_factory=dict)


def save_checkpoint(model: keras.Model, directory: Path, step: int, keep: int, extra: dict | None = None) -> Path:
    """Writes checkpoints/step-NNNNNNNN/ durably (see the module docstring) and keeps the newest `keep`."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"step-{step:08d}"
    partial = directory / f".step-{step:08d}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    check_room(model, directory)
    try:
        with _h5py_errors_raised():
            partial.mkdir()
            model.save_weights(str(partial / _WEIGHTS))
        state = {"step": step, "rng": _random_state(model), "global_rng": global_random_state(), **(extra or {})}
        (partial / _STATE).write_text(json.dumps(state) + "\n")
        files = sorted(p.name for p in partial.iterdir())
        manifest = {n: {"bytes": (partial / n).stat().st_size, "sha256": _sha256(partial / n)} for n in files}
        (partial / _MANIFEST).write_text(json.dumps({"files": manifest}, indent=1) + "\n")
        for name in (*files, _MANIFEST):
            _fsync(partial / name)
        _fsync(partial)
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)
        _fsync(directory)
    except OSError as err:
        shutil.rmtree(partial, ignore_errors=True)
        reason = err.strerror or str(err).splitlines()[0]
        raise RunFailure(f"{final}: cannot write the checkpoint ({reason}); the previous ones are intact") from err
    for old in _checkpoints(directory)[:-keep]:
        shutil.rmtree(old)
    return final


def newest_intact(directory: Path, warn=None) -> Checkpoint | None:
    """The newest checkpoint whose files match its manifest; each damaged newer one is reported through
    `warn` (a one-line message) and passed over."""
    for path in reversed(_checkpoints(directory)):
        problem = damage(path)
        if problem is None:
            state = json.loads((path / _STATE).read_text())
            return Checkpoint(path, state["step"], state)
        if warn is not None:
            warn(f"warning: {path} is damaged ({problem}); using the checkpoint before it")
    return None


def damage(path: Path) -> str | None:
    """What is wrong with the checkpoint at `path`, or None when every file matches its manifest."""
    try:
        if not (path / _MANIFEST).exists() and (path / _STATE).is_file():
            return None  # written before checkpoints had manifests (by a rename, so whole)
        manifest = json.loads((path / _MANIFEST).read_text())["files"]
        for name, expected in manifest.items():
            file = path / name
            if not file.is_file():
                return f"{name} is missing"
            if file.stat().st_size != expected["bytes"]:
                return f"{name} has {file.stat().st_size} bytes, the manifest says {expected['bytes']}"
            if _sha256(file) != expected["sha256"]:
                return f"{name} does not match its checksum"
        json.loads((path / _STATE).read_text())["step"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"unreadable manifest or state: {err}"
    return None


def restore_checkpoint(model: keras.Model, checkpoint: Checkpoint) -> None:
    """Loads model and optimizer state and every seed generator's state; the optimizer must be built first
    so its slots exist."""
    model.optimizer.build(model.trainable_variables)
    model.load_weights(str(checkpoint.path / _WEIGHTS))
    if "rng" not in checkpoint.state:
        return  # written before checkpoints kept the random state
    restore_global_random_state(checkpoint.state.get("global_rng", {}))
    saved = checkpoint.state["rng"]
    variables = _seed_states(model)
    if len(saved) != len(variables):  # by order: auto-numbered names differ between models built in one process
        raise RunFailure(
            f"{checkpoint.path}: its random state is for another model "
            f"({len(saved)} seed generators, this model has {len(variables)})"
        )
    for variable, (_, value) in zip(variables, saved):
        variable.assign(np.asarray(value, dtype=variable.dtype))


def load_weights(model: keras.Model, checkpoint: Checkpoint) -> None:
    """Loads only the model's weights (before compiling: no optimizer state is looked for)."""
    model.load_weights(str(checkpoint.path / _WEIGHTS))


def _seed_states(model: keras.Model) -> list:
    """The variables Keras counts as layer state but leaves out of weights files: seed generators' states."""
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def _random_state(model: keras.Model) -> list:
    return [[v.path, keras.ops.convert_to_numpy(v).tolist()] for v in _seed_states(model)]


def check_room(model: keras.Model, directory: Path) -> None:
    """Refuses to start a checkpoint (or a run) that the disk under `directory` has no room for."""
    directory.mkdir(parents=True, exist_ok=True)
    variables = [*model.weights, *(model.optimizer.variables if model.optimizer else [])]
    needed = int(sum(np.prod(v.shape) * np.dtype(v.dtype).itemsize for v in variables) * _HEADROOM) + 2**20
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise RunFailure(
            f"{directory}: {free / 2**20:,.1f} MiB free, a checkpoint needs about {needed / 2**20:,.1f} MiB; "
            "the previous checkpoints are intact"
        )


@contextlib.contextmanager
def _h5py_errors_raised():
    """h5py reports a failed write again from its destructors (`sys.unraisablehook`, many lines); the
    first error is raised, the echoes are dropped."""
    previous = sys.unraisablehook
    sys.unraisablehook = lambda _: None
    try:
        yield
    finally:
        gc.collect()
        sys.unraisablehook = previous


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(2**22), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _checkpoints(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(path for path in directory.glob("step-*") if path.is_dir())
