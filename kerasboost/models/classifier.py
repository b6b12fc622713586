"""Text classifiers: a dense head on the backbone's pooled output (BERT's [CLS]), on its first token's
vector (RoBERTa's <s>), or on the last real token (a decoder such as GPT-2, whose last position has seen
the whole text)."""

from __future__ import annotations

import keras

from kerasboost.architectures import architecture_of
from kerasboost.models.heads import HiddenClassifierHead


def build_classifier(backbone, num_classes: int, dropout: float) -> keras.Model:
    """{token_ids, padding_mask[, segment_ids]} -> class logits (float32), pooled and shaped as the
    backbone's architecture says (`classifier_pooling`, `classifier_hidden_activation`, `classifier_bias`),
    which mirror the architecture's Hugging Face *ForSequenceClassification head, so its weights load."""
    spec = architecture_of(backbone)
    names = ("token_ids", "segment_ids", "padding_mask") if spec.segments else ("token_ids", "padding_mask")
    inputs = {name: keras.Input(shape=(None,), dtype="int32", name=name) for name in names}
    outputs = backbone(inputs)
    if spec.classifier_pooling == "pooled":
        features = outputs[spec.pooled_output]
    elif spec.classifier_pooling == "first_token":
        features = outputs[:, 0, :]
    else:
        last = keras.ops.sum(inputs["padding_mask"], axis=1, keepdims=True) - 1
        features = keras.ops.take_along_axis(outputs, keras.ops.expand_dims(last, -1), axis=1)[:, 0, :]
    features = keras.layers.Dropout(dropout, name="classifier_dropout")(features)
    if spec.classifier_hidden_activation is not None:
        head = HiddenClassifierHead(num_classes, spec.classifier_hidden_activation, dropout, name="classifier")
    else:
        head = keras.layers.Dense(
            num_classes,
            use_bias=spec.classifier_bias,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            dtype="float32",
            name="classifier",
        )
    return keras.Model(inputs, head(features), name="text_classifier")
