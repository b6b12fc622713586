"""The attention softmax with its mask added, not selected, for TensorFlow without XLA.

Keras' `Softmax(mask=...)`, which keras-hub's attention calls on every layer's scores (batch x heads x
query x key), replaces masked scores with a large negative number (`where`), takes the softmax, then
zeroes masked entries again (`where`): two selects forward and two backward, each a pass over the
scores with the mask broadcast over the heads. `Softmax` below adds the mask as a bias instead, 0 where
kept and Keras' large negative number where masked, computed at the mask's own (smaller) size: one add
forward, nothing extra backward. Every row with at least one kept key gives Keras' values and gradients
(a masked score's exponent underflows to exactly 0 either way). A row whose keys are all masked, a query
inside an all-padding stretch, averages the values where Keras gives zeros; such positions are padding,
which real tokens never attend to and losses skip. Only the layer's class changes, and it keeps Keras'
name (see layer_norm.py). Under XLA the selects fuse into the softmax, so nothing is swapped there.
Measured in docs/performance.md.
"""

from __future__ import annotations

import keras
from keras import ops

from kerasboost.models.kernel_swap import swap_class_for_tensorflow_graphs


class Softmax(keras.layers.Softmax):
    """`keras.layers.Softmax` with an additive mask (see the module docstring); named as Keras' class on purpose."""

    def call(self, inputs, mask=None):
        if mask is None:
            return super().call(inputs)
        if keras.backend.standardize_dtype(mask.dtype) != "bool":
            mask = ops.greater(mask, 0.5)
        masked = -3e4 if keras.backend.standardize_dtype(inputs.dtype) == "float16" else -1e9  # Keras' values
        bias = ops.where(mask, ops.cast(0, inputs.dtype), ops.cast(masked, inputs.dtype))
        return super().call(inputs + bias)


def use_additive_masks(model: keras.Model, without_xla: bool) -> int:
    """Turns the plain `keras.layers.Softmax` layers of `model` into this module's when the backend is
    TensorFlow and the train step runs without XLA (`without_xla`); returns how many."""
    return swap_class_for_tensorflow_graphs(model, keras.layers.Softmax, Softmax, without_xla)
