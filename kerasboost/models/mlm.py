"""Masked-LM task model: backbone + keras-hub `MaskedLMHead` tied to the token embedding."""

from __future__ import annotations

import keras
import keras_hub


def build_mlm_model(backbone):
    """A functional model: {token_ids, segment_ids, padding_mask, mask_positions} -> logits at masked slots.

    The pooler gets no gradient from this loss, so it is frozen rather than left to AdamW's weight decay.
    The head is kept float32: under a mixed policy on TensorFlow a bfloat16 head fails on its float32 bias,
    and float32 logits make the softmax cross-entropy stable.
    """
    inputs = {
        "token_ids": keras.Input(shape=(None,), dtype="int32", name="token_ids"),
        "segment_ids": keras.Input(shape=(None,), dtype="int32", name="segment_ids"),
        "padding_mask": keras.Input(shape=(None,), dtype="int32", name="padding_mask"),
        "mask_positions": keras.Input(shape=(None,), dtype="int32", name="mask_positions"),
    }
    backbone.get_layer("pooled_dense").trainable = False
    sequence = backbone({key: inputs[key] for key in ("token_ids", "segment_ids", "padding_mask")})["sequence_output"]
    head = keras_hub.layers.MaskedLMHead(
        vocabulary_size=backbone.vocabulary_size,
        token_embedding=backbone.token_embedding,
        intermediate_activation="gelu",
        kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        dtype="float32",
        name="mlm_head",
    )
    logits = head(sequence, mask_positions=inputs["mask_positions"])
    return keras.Model(inputs, logits, name="bert_masked_lm")


def mlm_loss_and_metrics():
    """Cross-entropy averaged over real masked slots only (keras-hub's default also counts padding)."""
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight")
    return loss, [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
