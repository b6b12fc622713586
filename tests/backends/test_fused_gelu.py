"""The fused GELU: keras-hub's tanh-GELU and its gradient, swapped in only under TensorFlow's graph mode."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from helpers import assert_computes_and_trains_as, tiny_bert_mlm

from kerasboost.models.fused_gelu import fuse_gelus, fused_gelu

TENSORFLOW = keras.backend.backend() == "tensorflow"


def _value_and_gradient(gelu, x, upstream) -> list[np.ndarray]:
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(x)
        y = gelu(x)
    return [tf.cast(t, tf.float64).numpy() for t in (y, tape.gradient(y, x, output_gradients=upstream))]


@pytest.mark.parametrize("dtype, tolerance", [("float32", 2e-5), ("bfloat16", 1e-2)])
def test_values_and_gradient_match_the_tanh_gelu_in_float64(dtype, tolerance):
    """A TensorFlow kernel; TensorFlow is importable under every Keras backend, so this runs under each."""
    import tensorflow as tf

    x = tf.cast(tf.linspace(-8.0, 8.0, 4001), dtype)
    upstream = tf.cast(tf.random.stateless_normal((4001,), seed=(1, 2)), dtype)
    assert fused_gelu()(x).dtype == x.dtype
    reference = _value_and_gradient(
        lambda v: tf.nn.gelu(v, approximate=True), tf.cast(x, tf.float64), tf.cast(upstream, tf.float64)
    )
    fused = _value_and_gradient(fused_gelu(), x, upstream)
    unfused = _value_and_gradient(lambda v: tf.nn.gelu(v, approximate=True), x, upstream)  # Keras' TensorFlow GELU
    for ours, theirs, exact in zip(fused, unfused, reference):
        assert np.allclose(ours, exact, rtol=tolerance, atol=tolerance)
        if dtype == "bfloat16":  # float32 inside: more exact than bfloat16 arithmetic
            assert np.abs(ours - exact).max() <= np.abs(theirs - exact).max()


def test_swaps_the_feed_forward_gelus_only_under_tensorflow_graph_mode():
    model = tiny_bert_mlm(dropout=0.0)
    paths = [variable.path for variable in model.weights]
    assert fuse_gelus(model, graph_mode=False) == 0
    swapped = fuse_gelus(model, graph_mode=True)
    dense = [
        layer for layer in model._flatten_layers() if isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense))
    ]
    fused = [layer for layer in dense if layer.activation is fused_gelu()] if TENSORFLOW else []
    # A feed-forward layer per transformer layer, and the MLM head's dense layer, whose GELU is its
    # backbone's (as in Hugging Face's heads).
    assert swapped == len(fused) == (3 if TENSORFLOW else 0)
    names = sorted(layer.name for layer in fused)
    assert names == (["feedforward_intermediate_dense"] * 2 + ["intermediate_dense"] if TENSORFLOW else [])
    encoders = [layer for layer in model._flatten_layers() if type(layer).__name__ == "TransformerEncoder"]
    assert all(encoder.get_config()["activation"] == encoders[0].get_config()["activation"] for encoder in encoders)
    assert "gelu_approximate" in str(encoders[0].get_config()["activation"])  # configs and presets unchanged
    assert [variable.path for variable in model.weights] == paths


def test_a_model_with_fused_gelus_computes_and_trains_as_before():
    plain, fused = tiny_bert_mlm(dropout=0.0), tiny_bert_mlm(dropout=0.0)
    fuse_gelus(fused, graph_mode=True)
    assert_computes_and_trains_as(fused, plain)
