"""keras-hub's tanh-GELU as one XLA kernel each way, for TensorFlow's graph mode.

On a CPU kerasboost trains TensorFlow models in graph mode (oneDNN's bf16 matmuls beat XLA's; see
`backend.jit_compile`), and there `tf.nn.gelu(approximate=True)` is about twelve elementwise kernels
forward and backward, each a pass over the feed-forward activations (batch x sequence x FFN). It is the
largest non-matmul cost of a BERT or GPT-2 step. `fuse_gelus` gives the feed-forward layers the same
function compiled by XLA into one pass forward and one backward (the derivative in closed form, from the
saved input), computed in float32 whatever the layer's dtype. Only the layer's `activation` attribute
changes: no variable, weight path or config, so checkpoints and presets are unaffected. JAX (XLA) and
PyTorch (one ATen kernel each way) already fuse it, and so does TensorFlow when the whole step is
compiled with XLA, so elsewhere nothing is swapped. Measured in docs/performance.md.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import keras

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_CUBIC = 0.044715


def fuse_gelus(model: keras.Model, graph_mode: bool) -> int:
    """Gives every layer of `model` whose activation is keras-hub's tanh-GELU the fused one, when the
    backend is TensorFlow and `jit_compile: auto` chose graph mode (`graph_mode`; an explicit `false`
    keeps XLA out entirely); returns how many."""
    if keras.backend.backend() != "tensorflow" or not graph_mode:
        return 0
    from keras_hub.src.utils.keras_utils import gelu_approximate

    swapped = 0
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense)) and layer.activation is gelu_approximate:
            layer.activation = fused_gelu()
            swapped += 1
    return swapped


@functools.cache
def fused_gelu() -> Callable:
    """0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) with its gradient, each one XLA kernel (TensorFlow only)."""
    import tensorflow as tf

    def tanh_of(x):
        return tf.tanh(_SQRT_2_OVER_PI * x * (1.0 + _CUBIC * x * x))

    @tf.function(jit_compile=True, autograph=False)
    def forward(x):
        x32 = tf.cast(x, tf.float32)
        return tf.cast(0.5 * x32 * (1.0 + tanh_of(x32)), x.dtype)

    @tf.function(jit_compile=True, autograph=False)
    def backward(x, upstream):
        x32 = tf.cast(x, tf.float32)
        t = tanh_of(x32)
        slope = 0.5 * (1.0 + t) + 0.5 * x32 * (1.0 - t * t) * _SQRT_2_OVER_PI * (1.0 + 3.0 * _CUBIC * x32 * x32)
        return tf.cast(tf.cast(upstream, tf.float32) * slope, x.dtype)

    @tf.custom_gradient
    def gelu(x):
        return forward(x), lambda upstream: backward(x, upstream)

    return gelu
