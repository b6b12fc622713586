"""Checkpoints keep the model, the optimizer and the random state, prune old steps, ignore partial writes,
pass over damaged ones, and fail in one line on a full disk; the skipping optimizer undoes bad updates."""

from __future__ import annotations

import errno
import shutil

import keras
import numpy as np
import pytest

from kerasboost.errors import RunFailure
from kerasboost.models.dropout import pack_dropouts
from kerasboost.recipe import TrainConfig
from kerasboost.train.checkpoints import newest_intact, restore_checkpoint, save_checkpoint
from kerasboost.train.optimizer import build_optimizer

X, Y = np.linspace(-1, 1, 64, dtype="float32").reshape(8, 8), np.ones((8, 2), "float32")


def compiled_model(seed, dropout=0.0, optimizer=None):
    """With kerasboost's dropout, as runs have it (on PyTorch, Keras' own draws from torch's global
    generator when unseeded, which the first `fit` of a process also draws from)."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(8), keras.layers.Dropout(dropout), keras.layers.Dense(2)]
    )
    pack_dropouts(model)
    model.compile(optimizer=optimizer or keras.optimizers.AdamW(1e-2), loss="mse", jit_compile=False)
    return model


def numpy(variables):
    return [keras.ops.convert_to_numpy(v) for v in variables]


def test_round_trip_restores_weights_and_optimizer_state(tmp_path):
    model = compiled_model(0)
    model.fit(X, Y, epochs=3, verbose=0, shuffle=False)
    for step in (1, 2, 3):
        save_checkpoint(model, tmp_path, step, keep=2)
    (tmp_path / ".step-00000009.partial").mkdir()
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-00000002", "step-00000003"]
    checkpoint = newest_intact(tmp_path)
    assert checkpoint.step == 3

    restored = compiled_model(1)
    restore_checkpoint(restored, checkpoint)
    assert int(keras.ops.convert_to_numpy(restored.optimizer.iterations)) == 3
    for a, b in zip(numpy(model.optimizer.variables), numpy(restored.optimizer.variables)):
        np.testing.assert_array_equal(a, b)


def test_resume_draws_the_same_dropout_masks_to_the_bit(tmp_path):
    model = compiled_model(0, dropout=0.5)
    model.fit(X, Y, batch_size=4, epochs=2, verbose=0, shuffle=False)
    save_checkpoint(model, tmp_path, 4, keep=2)
    model.fit(X, Y, batch_size=4, epochs=2, verbose=0, shuffle=False)

    restored = compiled_model(1, dropout=0.5)  # other initial weights and another dropout seed
    restore_checkpoint(restored, newest_intact(tmp_path))
    restored.fit(X, Y, batch_size=4, epochs=2, verbose=0, shuffle=False)
    for a, b in zip(numpy(model.weights), numpy(restored.weights)):
        assert a.tobytes() == b.tobytes()


def test_a_damaged_newest_checkpoint_is_passed_over_with_one_warning(tmp_path):
    model = compiled_model(0)
    for step in (1, 2, 3):
        save_checkpoint(model, tmp_path, step, keep=3)
    weights = tmp_path / "step-00000003" / "model.weights.h5"
    with weights.open("r+b") as handle:
        handle.truncate(weights.stat().st_size - 10)
    state = tmp_path / "step-00000002" / "state.json"
    state.write_text(state.read_text().replace('"step": 2', '"step": 7'))
    warnings = []
    assert newest_intact(tmp_path, warn=warnings.append).step == 1
    assert len(warnings) == 2 and "step-00000003 is damaged (model.weights.h5 has" in warnings[0]
    assert "step-00000002 is damaged (state.json does not match its checksum)" in warnings[1]


def test_a_full_disk_is_one_line_and_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    model = compiled_model(0)
    save_checkpoint(model, tmp_path, 1, keep=2)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=1000))
    with pytest.raises(RunFailure, match="MiB free, a checkpoint needs about") as error:
        save_checkpoint(model, tmp_path, 2, keep=2)
    assert str(tmp_path) in str(error.value) and "\n" not in str(error.value)
    monkeypatch.undo()

    def no_space(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(model, "save_weights", no_space)
    with pytest.raises(RunFailure, match="cannot write the checkpoint \\(No space left on device\\)"):
        save_checkpoint(model, tmp_path, 2, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000001"]
    assert newest_intact(tmp_path).step == 1


def test_the_skipping_optimizer_undoes_a_non_finite_update_and_counts_it():
    config = TrainConfig(steps=10, nonfinite="skip", learning_rate=1e-2, warmup_steps=0)
    model = compiled_model(0, optimizer=build_optimizer(config, total_steps=10))
    model.fit(X, Y, batch_size=8, epochs=1, verbose=0)
    before = numpy([*model.weights, *model.optimizer.variables])
    model.fit(np.full_like(X, np.nan), Y, batch_size=8, epochs=1, verbose=0)
    after = numpy([*model.weights, *model.optimizer.variables])
    names = [v.path for v in [*model.weights, *model.optimizer.variables]]
    for name, a, b in zip(names, before, after):
        if name.endswith("iteration") or name.endswith("iterations") or "skipped_steps" in name:
            continue
        assert a.tobytes() == b.tobytes(), name
    assert int(keras.ops.convert_to_numpy(model.optimizer.skipped_steps)) == 1
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 2
    model.fit(X, Y, batch_size=8, epochs=1, verbose=0)
    assert not np.array_equal(numpy(model.weights)[0], before[0])
    assert int(keras.ops.convert_to_numpy(model.optimizer.skipped_steps)) == 1
