"""LayerNorm with its gradient in closed form, for TensorFlow without XLA.

Keras' `LayerNormalization` on TensorFlow is mean, variance, rsqrt and a scale-and-shift in float32;
TensorFlow differentiates that op by op, and the backward pass broadcasts each mean's gradient with a
`Tile`, re-derives the variance's, and casts back and forth: some twenty kernels over batch x sequence
x hidden, run one by one in graph mode, ten times in a 4-layer BERT with its MLM head. This module's
`LayerNormalization` computes the same forward pass and writes the gradient directly,
`dx = rstd · (g - mean(g) - x̂ · mean(g · x̂))` with `g = dy · γ`, `dγ = Σ dy · x̂`, `dβ = Σ dy`, from the
saved normalised input: fewer passes. Arithmetic is float32 whatever the layer's dtype, as in Keras.
Only the layer's class changes (no variable, weight path or config), and the class keeps Keras' name,
because Keras keys a model's saved weights by its layers' class names: checkpoints and presets load
into plain keras-hub models and back. JAX (XLA) and PyTorch (`F.layer_norm`, which Keras calls) have
fused kernels already, so nothing is swapped there, nor under XLA. Measured in docs/performance.md.
"""

from __future__ import annotations

import functools

import keras

from kerasboost.models.kernel_swap import swap_class_for_tensorflow_graphs


class LayerNormalization(keras.layers.LayerNormalization):
    """`keras.layers.LayerNormalization` over the last axis with a hand-written gradient (TensorFlow only);
    named as Keras' class on purpose (see the module docstring)."""

    def call(self, inputs):
        if self.rms_scaling or not self.center or not self.scale or self.axis not in ([-1], [len(inputs.shape) - 1]):
            return super().call(inputs)
        gamma, beta = keras.ops.cast(self.gamma, "float32"), keras.ops.cast(self.beta, "float32")  # tensors, read here
        return keras.ops.cast(closed_form_layer_norm(self.epsilon)(inputs, gamma, beta), self.compute_dtype)


def use_closed_form_layer_norms(model: keras.Model, without_xla: bool) -> int:
    """Turns the plain `keras.layers.LayerNormalization` layers of `model` into this module's when
    the backend is TensorFlow and the train step runs without XLA (`without_xla`); returns how many."""
    return swap_class_for_tensorflow_graphs(model, keras.layers.LayerNormalization, LayerNormalization, without_xla)


@functools.cache
def closed_form_layer_norm(epsilon: float):
    """The normalisation with its gradient for one epsilon (TensorFlow only)."""
    import tensorflow as tf

    @tf.custom_gradient
    def layer_norm(x, gamma, beta):
        x32, gamma32 = tf.cast(x, tf.float32), tf.cast(gamma, tf.float32)
        mean, variance = tf.nn.moments(x32, axes=[-1], keepdims=True)
        rstd = tf.math.rsqrt(variance + epsilon)
        normalised = (x32 - mean) * rstd
        outputs = tf.cast(normalised * gamma32 + tf.cast(beta, tf.float32), x.dtype)

        def gradient(upstream):
            upstream = tf.cast(upstream, tf.float32)
            leading = list(range(len(upstream.shape) - 1))
            scaled = upstream * gamma32
            projection = tf.reduce_mean(scaled * normalised, axis=-1, keepdims=True)
            dx = rstd * (scaled - tf.reduce_mean(scaled, axis=-1, keepdims=True) - normalised * projection)
            dgamma = tf.reduce_sum(upstream * normalised, axis=leading)
            dbeta = tf.reduce_sum(upstream, axis=leading)
            return tf.cast(dx, x.dtype), tf.cast(dgamma, gamma.dtype), tf.cast(dbeta, beta.dtype)

        return outputs, gradient

    return layer_norm
