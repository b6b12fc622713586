"""Cross-entropy on integer targets, with optional label smoothing (`train.label_smoothing`).

Keras' `SparseCategoricalCrossentropy` has no label smoothing (only the one-hot `CategoricalCrossentropy`
has, which would need (batch, slots, vocabulary) one-hot targets for masked-LM). With smoothing ε over
K classes the target is (1 - ε)·onehot(y) + ε/K, so the loss is (1 - ε)·(-log p_y) + ε·mean_k(-log p_k),
computed here from the log-softmax in float32 (bf16 logits included).
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerasboost")
class SmoothedSparseCrossEntropy(keras.losses.Loss):
    """Sparse categorical cross-entropy from logits with label smoothing `smoothing`."""

    def __init__(self, smoothing: float, reduction: str = "sum_over_batch_size", name: str = "smoothed_cross_entropy"):
        super().__init__(reduction=reduction, name=name)
        self.smoothing = smoothing

    def call(self, y_true, y_pred):
        log_probs = ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1)
        picked = ops.take_along_axis(log_probs, ops.expand_dims(ops.cast(y_true, "int32"), -1), axis=-1)
        return -(1.0 - self.smoothing) * ops.squeeze(picked, -1) - self.smoothing * ops.mean(log_probs, axis=-1)

    def get_config(self) -> dict:
        return {**super().get_config(), "smoothing": self.smoothing}


def sparse_cross_entropy(smoothing: float = 0.0, reduction: str = "sum_over_batch_size") -> keras.losses.Loss:
    """Keras' own loss without smoothing (its fused kernels), ours with."""
    if smoothing:
        return SmoothedSparseCrossEntropy(smoothing, reduction=reduction)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction)
