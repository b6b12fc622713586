"""The additive-mask Softmax, swapped in only for TensorFlow without XLA; the code is plain keras.ops, so it
is checked against Keras' Softmax on every backend."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from helpers import assert_swapped_model_computes_and_trains_as_before, assert_swapped_only_for_tensorflow_without_xla

from kerasboost.models import masked_softmax
from kerasboost.models.masked_softmax import use_additive_masks


def _scores_and_mask(dtype: str, mask_dtype: str):
    """Attention-shaped scores (batch, heads, query, key) of mixed scales and a (batch, 1, query, key)
    mask keeping at least one key in every row."""
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(2, 3, 6, 7)) * np.linspace(0.5, 20.0, 6)[:, None]
    keep = rng.random((2, 1, 6, 7)) > 0.4
    keep[..., 0] = True
    return keras.ops.cast(scores, dtype), keras.ops.cast(keep, mask_dtype)


@pytest.mark.parametrize(
    "dtype, mask_dtype", [("float32", "bool"), ("float32", "float32"), ("bfloat16", "bool"), ("float16", "int32")]
)
def test_gives_keras_softmax_where_a_row_keeps_a_key(dtype, mask_dtype):
    scores, mask = _scores_and_mask(dtype, mask_dtype)
    layer = keras.layers.Softmax(axis=-1, dtype=dtype)
    expected = keras.ops.convert_to_numpy(keras.ops.cast(layer(scores, mask=mask), "float32"))
    layer.__class__ = masked_softmax.Softmax
    ours = keras.ops.convert_to_numpy(keras.ops.cast(layer(scores, mask=mask), "float32"))
    kept = np.broadcast_to(keras.ops.convert_to_numpy(keras.ops.cast(mask, "bool")), ours.shape)
    assert (ours[~kept] == 0).all()
    assert np.allclose(ours, expected, atol=1e-6 if dtype == "float32" else 1e-2)
    assert np.array_equal(
        keras.ops.convert_to_numpy(layer(scores)),
        keras.ops.convert_to_numpy(keras.layers.Softmax(axis=-1, dtype=dtype)(scores)),
    )


def test_a_row_with_every_key_masked_averages_instead_of_giving_zeros():
    """The documented difference: such a row is padding that nothing attends to."""
    scores = keras.ops.convert_to_tensor(np.arange(8, dtype="float32").reshape(2, 4))
    mask = keras.ops.convert_to_tensor(np.array([[True, False, True, False], [False] * 4]))
    ours = keras.ops.convert_to_numpy(masked_softmax.Softmax()(scores, mask=mask))
    assert np.allclose(ours[1], 0.25) and ours[0][[1, 3]].max() == 0
    assert np.allclose(keras.ops.convert_to_numpy(keras.layers.Softmax()(scores, mask=mask))[1], 0.0)


def test_swaps_the_softmaxes_only_for_tensorflow_without_xla():
    """Two: one per attention layer."""
    assert_swapped_only_for_tensorflow_without_xla(use_additive_masks, keras.layers.Softmax, masked_softmax.Softmax, 2)


def test_a_model_with_additive_masks_computes_and_trains_as_before_on_padded_rows():
    assert_swapped_model_computes_and_trains_as_before(keras.layers.Softmax, masked_softmax.Softmax, 2)
