"""PackedDropout: the rate, the scaling and the gradient it keeps, and the swap inside a keras-hub model."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from helpers import mlm_batch, tiny_bert_mlm

from kerasboost.models.dropout import PackedDropout, pack_dropouts


@pytest.mark.parametrize("rate, width", [(0.1, 128), (0.5, 33), (0.25, 1)])
def test_drops_the_rate_and_keeps_the_expected_value(rate, width):
    layer = PackedDropout(rate, seed=3)
    x = np.ones((64, 97, width), "float32")
    y = keras.ops.convert_to_numpy(layer(x, training=True))
    dropped = (y == 0).mean()
    assert abs(dropped - rate) < 4 * np.sqrt(rate * (1 - rate) / y.size) + 1e-4
    assert y.mean() == pytest.approx(1.0, abs=0.02)
    kept = y[y != 0]
    assert np.allclose(kept, 32768 / (32768 - round(rate * 32768)))
    assert np.array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), x)
    other = keras.ops.convert_to_numpy(layer(x, training=True))
    assert not np.array_equal(other == 0, y == 0)  # a fresh mask on every call


@pytest.mark.parametrize("rate, dropped", [(1.0, 1.0), (0.99999, 1.0), (0.00001, 0.0)])
def test_rates_that_round_to_nothing_or_everything_follow_keras(rate, dropped):
    y = keras.ops.convert_to_numpy(PackedDropout(rate, seed=0)(np.ones((8, 16), "float32"), training=True))
    assert np.isfinite(y).all() and abs((y == 0).mean() - dropped) < 0.01


def test_both_halves_of_a_draw_are_used_independently():
    y = keras.ops.convert_to_numpy(PackedDropout(0.5, seed=0)(np.ones((4000, 2), "float32"), training=True))
    both = ((y[:, 0] == 0) & (y[:, 1] == 0)).mean()
    assert abs(both - 0.25) < 0.03


def test_pack_dropouts_swaps_every_keras_dropout_of_a_built_model_and_it_still_trains():
    model = tiny_bert_mlm(dropout=0.1)
    paths = [variable.path for variable in model.weights]
    plain = [layer for layer in model._flatten_layers() if type(layer) is keras.layers.Dropout]
    assert pack_dropouts(model) == len(plain) >= 5  # embeddings, and per layer attention, after attention, after FFN
    assert all(type(layer) is PackedDropout for layer in plain)
    assert [variable.path for variable in model.weights] == paths
    x, labels = mlm_batch(rows=8)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    history = model.fit(x, labels, batch_size=4, epochs=3, verbose=0)
    assert np.isfinite(history.history["loss"]).all() and history.history["loss"][-1] < history.history["loss"][0]
