"""Dropout that draws one random number for every two elements.

Keras' dropout draws a float per element; on CPUs that draw is most of dropout's cost, and dropout
(after the embeddings, on the attention probabilities, after attention and after the feed-forward
block) is one of the largest non-matmul costs of a BERT or GPT-2 step. `PackedDropout` draws one 30-bit
integer per pair of elements and compares each 15-bit half with `round(rate * 2**15)`: half the random
numbers, the same mask distribution up to a rate rounded to 1/32768 (fused attention kernels such as
FlashAttention round theirs to 1/256). Kept elements are scaled by the inverse of the exact keep
probability, so the expected output equals the input. Measured in docs/performance.md.

`pack_dropouts` swaps the class of a built model's plain `keras.layers.Dropout` layers (keras-hub's and
our heads'): no variable, weight path or config changes, so checkpoints and presets are unaffected.
"""

from __future__ import annotations

import keras
from keras import ops

from kerasboost.models.kernel_swap import swap_class

_FIELD_BITS = 15
_FIELDS = 2**_FIELD_BITS


class PackedDropout(keras.layers.Dropout):
    """`keras.layers.Dropout` with two mask entries per random draw (see the module docstring)."""

    def call(self, inputs, training=False):
        width, threshold = inputs.shape[-1], round(self.rate * _FIELDS)
        if not training or not 0 < threshold < _FIELDS or self.noise_shape is not None or width is None:
            return super().call(inputs, training=training)  # nothing (or everything) dropped, or Keras' own cases
        draws = keras.random.randint(
            (*ops.shape(inputs)[:-1], (width + 1) // 2),
            0,
            2 ** (2 * _FIELD_BITS),
            dtype="int32",
            seed=self.seed_generator,
        )
        fields = ops.concatenate([ops.bitwise_and(draws, _FIELDS - 1), ops.right_shift(draws, _FIELD_BITS)], axis=-1)
        keep = ops.greater_equal(fields[..., :width], threshold)
        # One multiply by a 0-or-scale tensor: cheaper than where(keep, inputs * scale, 0) on TensorFlow and PyTorch.
        factor = ops.where(keep, ops.cast(_FIELDS / (_FIELDS - threshold), inputs.dtype), ops.cast(0, inputs.dtype))
        return inputs * factor


def pack_dropouts(model: keras.Model) -> int:
    """Turns every plain `keras.layers.Dropout` inside `model` into a `PackedDropout`; returns how many."""
    return swap_class(model, keras.layers.Dropout, PackedDropout)
