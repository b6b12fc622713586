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


@keras.saving.register_keras_serializable(package="kerasboost")
class HiddenClassifierHead(keras.layers.Layer):
    """A classifier with a hidden layer, as Hugging Face's RobertaClassificationHead: dense (the input's
    width) -> activation -> dropout -> projection onto the classes. One layer, so that
    `peft.modules_to_save: [classifier]` trains all of it, as PEFT's `modules_to_save` does.

    The projection's logits are float32 whatever the dtype policy.
    """

    def __init__(self, num_classes: int, activation: str = "tanh", dropout: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.activation, self.dropout = num_classes, activation, dropout
        initializer = keras.initializers.TruncatedNormal(stddev=0.02)
        self.hidden = None
        self.dropout_layer = keras.layers.Dropout(dropout, name="dropout")
        self.out_proj = keras.layers.Dense(
            num_classes, kernel_initializer=initializer, dtype="float32", name="out_proj"
        )
        self._initializer = initializer

    def build(self, features_shape):
        self.hidden = keras.layers.Dense(
            features_shape[-1],
            activation=self.activation,
            kernel_initializer=self._initializer,
            dtype=self.dtype_policy,
            name="dense",
        )
        self.hidden.build(features_shape)
        self.out_proj.build(features_shape)
        self.built = True

    def call(self, features, training=None):
        hidden = self.dropout_layer(self.hidden(features), training=training)
        return self.out_proj(keras.ops.cast(hidden, "float32"))

    def compute_output_shape(self, features_shape):
        return (*features_shape[:-1], self.num_classes)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "activation": self.activation,
            "dropout": self.dropout,
        }
