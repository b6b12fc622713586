"""Checkpoints keep the model and the optimizer state, prune old steps and ignore partial writes."""

from __future__ import annotations

import keras
import numpy as np

from kerasboost.train.checkpoints import latest_checkpoint, restore_checkpoint, save_checkpoint


def compiled_model(seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.AdamW(1e-2), loss="mse")
    return model


def test_round_trip_restores_weights_and_optimizer_state(tmp_path):
    model = compiled_model(0)
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 2), "float32")
    model.fit(x, y, epochs=3, verbose=0)
    for step in (1, 2, 3):
        save_checkpoint(model, tmp_path, step, keep=2)
    (tmp_path / ".step-00000009.partial").mkdir()
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-00000002", "step-00000003"]
    path, step = latest_checkpoint(tmp_path)
    assert step == 3

    restored = compiled_model(1)
    restore_checkpoint(restored, path)
    assert int(keras.ops.convert_to_numpy(restored.optimizer.iterations)) == 3
    for a, b in zip(model.optimizer.variables, restored.optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    model.fit(x, y, epochs=1, verbose=0)
    restored.fit(x, y, epochs=1, verbose=0)
    np.testing.assert_allclose(model.predict(x, verbose=0), restored.predict(x, verbose=0), rtol=1e-6)


def test_no_checkpoint(tmp_path):
    assert latest_checkpoint(tmp_path / "missing") is None
