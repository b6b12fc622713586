"""The closed-form LayerNorm: Keras' LayerNorm with a hand-written gradient, swapped in only for TensorFlow without XLA."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from helpers import assert_computes_and_trains_as, mlm_batch, tiny_bert_mlm

from kerasboost.models import layer_norm
from kerasboost.models.layer_norm import closed_form_layer_norm, use_closed_form_layer_norms

TENSORFLOW = keras.backend.backend() == "tensorflow"


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
    exact = _values_and_gradients(_textbook, *(tf.cast(t, tf.float64) for t in (x, gamma, beta)), tf.cast(tf.cast(upstream, dtype), tf.float64))
    assert ours[0].dtype == np.float64 and closed_form_layer_norm(1e-6)(x, gamma, beta).dtype == x.dtype
    for name, mine, reference in zip(("y", "dx", "dgamma", "dbeta"), ours, exact):
        scale = np.abs(reference).max()
        assert np.abs(mine - reference).max() <= tolerance * scale, name


def test_swaps_the_layer_norms_only_for_tensorflow_without_xla():
    model = tiny_bert_mlm(dropout=0.0)
    paths = [v.path for v in model.weights]
    configs = [layer.get_config() for layer in model._flatten_layers() if isinstance(layer, keras.layers.LayerNormalization)]
    assert use_closed_form_layer_norms(model, without_xla=False) == 0
    swapped = use_closed_form_layer_norms(model, without_xla=True)
    norms = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.LayerNormalization)]
    assert swapped == (len(norms) if TENSORFLOW else 0) and len(norms) == 6  # embeddings, 2 per layer, the MLM head
    assert all(isinstance(layer, layer_norm.LayerNormalization) == TENSORFLOW for layer in norms)
    assert [layer.get_config() for layer in norms] == configs
    assert [v.path for v in model.weights] == paths


def test_a_model_with_closed_form_layer_norms_computes_and_trains_as_before():
    plain, swapped = tiny_bert_mlm(dropout=0.0), tiny_bert_mlm(dropout=0.0)
    use_closed_form_layer_norms(swapped, without_xla=True)
    assert_computes_and_trains_as(swapped, plain)


def test_weights_saved_with_swapped_layer_norms_load_into_a_plain_model(tmp_path):
    """Keras keys saved weights by class name, which the swapped class keeps: checkpoints load either way."""
    x, _ = mlm_batch(rows=2)
    swapped, plain = tiny_bert_mlm(dropout=0.0), tiny_bert_mlm(dropout=0.0)
    use_closed_form_layer_norms(swapped, without_xla=True)
    for variable in swapped.weights:
        variable.assign(variable + 0.01)
    swapped.save_weights(str(tmp_path / "swapped.weights.h5"))
    plain.load_weights(str(tmp_path / "swapped.weights.h5"))
    assert np.allclose(keras.ops.convert_to_numpy(plain(x)), keras.ops.convert_to_numpy(swapped(x)), atol=1e-5)
