"""Heads keras-hub does not have."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="kerasboost")
class NextSentenceHead(keras.layers.Layer):
    """BERT's next-sentence classifier: a dense layer from the pooled [CLS] vector to 2 logits.

    (keras-hub's BERT backbone already applies the tanh pooler.) Label 1 means "B follows A".
    The logits are float32 whatever the dtype policy, so the loss is computed at full precision.

    Args:
        kernel_initializer: initializer of the output kernel.
    """

    def __init__(self, kernel_initializer="glorot_uniform", **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.dense = keras.layers.Dense(
            2, kernel_initializer=self.kernel_initializer, dtype=self.dtype_policy, name="logits"
        )

    def build(self, pooled_shape):
        self.dense.build(pooled_shape)
        self.built = True

    def call(self, pooled):
        return self.dense(keras.ops.cast(pooled, self.compute_dtype))

    def compute_output_shape(self, pooled_shape):
        return (*pooled_shape[:-1], 2)

    def get_config(self) -> dict:
        return {**super().get_config(), "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}
