"""Pretraining models: masked LM on any encoder, optionally with next-sentence prediction (the original BERT).

The MLM head is keras-hub's `MaskedLMHead` tied to the token embedding; the NSP head is ours.
"""

from __future__ import annotations

import keras
import keras_hub

from kerasboost.architectures import architecture_of
from kerasboost.models.block_settings import feed_forward_activation, layer_norm_epsilon
from kerasboost.models.heads import NextSentenceHead
from kerasboost.models.losses import sparse_cross_entropy


def model_inputs(segments: bool, *extra: str) -> dict:
    names = ("token_ids", *(("segment_ids",) if segments else ()), "padding_mask", *extra)
    return {name: keras.Input(shape=(None,), dtype="int32", name=name) for name in names}


def build_mlm_model(backbone, next_sentence: bool = False) -> keras.Model:
    """{token_ids, [segment_ids,] padding_mask, mask_positions} -> MLM logits at the masked slots
    (and, with `next_sentence`, a dict {"mlm": ..., "nsp": ...}).

    Without NSP the pooler (if the backbone has one) gets no gradient, so it is frozen rather than left to
    AdamW's weight decay.
    The masked-LM head computes with its backbone's GELU and layer-norm epsilon, as Hugging Face's heads do.
    The heads are float32: under a mixed policy on TensorFlow a bfloat16 MaskedLMHead fails on its
    float32 bias, and float32 logits keep the softmax cross-entropy stable.
    """
    spec = architecture_of(backbone)
    inputs = model_inputs(spec.segments, "mask_positions")
    outputs = backbone({key: value for key, value in inputs.items() if key != "mask_positions"})
    for name in spec.per_sequence_layers:
        backbone.get_layer(name).trainable = next_sentence
    sequence = outputs[spec.sequence_output] if spec.sequence_output else outputs
    head = keras_hub.layers.MaskedLMHead(
        vocabulary_size=backbone.vocabulary_size,
        token_embedding=backbone.token_embedding,
        intermediate_activation=feed_forward_activation(backbone),
        layer_norm_epsilon=layer_norm_epsilon(backbone),
        kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        dtype="float32",
        name="mlm_head",
    )
    mlm_logits = head(sequence, mask_positions=inputs["mask_positions"])
    if not next_sentence:
        return keras.Model(inputs, mlm_logits, name="masked_lm")
    nsp_logits = NextSentenceHead(kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02), name="nsp_head")(
        outputs[spec.pooled_output]
    )
    return keras.Model(inputs, {"mlm": mlm_logits, "nsp": nsp_logits}, name="bert_pretraining")


def masked_cross_entropy(smoothing: float = 0.0) -> keras.losses.Loss:
    """Cross-entropy averaged over slots with non-zero weight (keras-hub's default also counts padding)."""
    return sparse_cross_entropy(smoothing, reduction="mean_with_sample_weight")


def mlm_loss_and_metrics(smoothing: float = 0.0):
    return masked_cross_entropy(smoothing), [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
