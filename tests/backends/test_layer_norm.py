"""The closed-form LayerNorm: Keras' LayerNorm with a hand-written gradient, swapped in only for
TensorFlow without XLA."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from helpers import (
    assert_computes_and_trains_as,
    assert_swapped_only_for_tensorflow_without_xla,
    assert_weights_load_into_a_plain_model,
    tiny_bert_mlm,
)

from kerasboost.models import layer_norm
from kerasboost.models.layer_norm import closed_form_layer_norm, use_closed_form_layer_norms


def _values_and_gradients(layer_norm, x, gamma, beta, upstream) -> list[np.ndarray]:
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch([x, gamma, beta])
        y = layer_norm(x, gamma, beta)
    return [tf.cast(t, tf.float64).numpy() for t in (y, *tape.gradient(y, [x, gamma, beta], output_gradients=upstream))]


def _textbook(x, gamma, beta, epsilon=1e-6):
    import tensorflow as tf

    mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
    return (x - mean) / tf.sqrt(variance + epsilon) * gamma + beta


@pytest.mark.parametrize("dtype, tolerance", [("float32", 1e-4), ("bfloat16", 5e-2)])
def test_values_and_gradients_match_layer_norm_in_float64(dtype, tolerance):
    """A TensorFlow function; TensorFlow is importable under every Keras backend, so this runs under each.
    Rows of different scales and offsets; gamma and beta in float32, as Keras keeps them."""
    import tensorflow as tf

    rows = tf.random.stateless_normal((3, 5, 48), seed=(1, 2)) * tf.reshape(tf.linspace(0.1, 30.0, 15), (3, 5, 1)) + 4.0
    gamma, beta = tf.random.stateless_normal((48,), seed=(3, 4)), tf.random.stateless_normal((48,), seed=(5, 6))
    upstream = tf.random.stateless_normal((3, 5, 48), seed=(7, 8))
    x = tf.cast(rows, dtype)
    ours = _values_and_gradients(closed_form_layer_norm(1e-6), x, gamma, beta, tf.cast(upstream, dtype))
    exact = _values_and_gradients(
        _textbook, *(tf.cast(t, tf.float64) for t in (x, gamma, beta)), tf.cast(tf.cast(upstream, dtype), tf.float64)
    )
    assert ours[0].dtype == np.float64 and closed_form_layer_norm(1e-6)(x, gamma, beta).dtype == x.dtype
    for name, mine, reference in zip(("y", "dx", "dgamma", "dbeta"), ours, exact):
        scale = np.abs(reference).max()
        assert np.abs(mine - reference).max() <= tolerance * scale, name


def test_swaps_the_layer_norms_only_for_tensorflow_without_xla():
    """Six: the embeddings', two per layer, the MLM head's."""
    assert_swapped_only_for_tensorflow_without_xla(
        use_closed_form_layer_norms, keras.layers.LayerNormalization, layer_norm.LayerNormalization, 6
    )


def test_a_model_with_closed_form_layer_norms_computes_and_trains_as_before():
    plain, swapped = tiny_bert_mlm(dropout=0.0), tiny_bert_mlm(dropout=0.0)
    use_closed_form_layer_norms(swapped, without_xla=True)
    assert_computes_and_trains_as(swapped, plain)


def test_weights_saved_with_swapped_layer_norms_load_into_a_plain_model(tmp_path):
    assert_weights_load_into_a_plain_model(lambda model: use_closed_form_layer_norms(model, without_xla=True), tmp_path)
