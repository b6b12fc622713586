"""Text classifiers: a dense head on the backbone's pooled output (BERT's [CLS]), on its first token's
vector (RoBERTa's <s>), or on the last real token (a decoder such as GPT-2, whose last position has seen
the whole text)."""

from __future__ import annotations

import keras


def build_classifier(backbone, num_classes: int, dropout: float, uses_segments: bool, pooling: str) -> keras.Model:
    """{token_ids, padding_mask[, segment_ids]} -> class logits (float32).

    `pooling`: pooled | first_token | last_token (an architecture's `classifier_pooling`)."""
    names = ("token_ids", "segment_ids", "padding_mask") if uses_segments else ("token_ids", "padding_mask")
    inputs = {name: keras.Input(shape=(None,), dtype="int32", name=name) for name in names}
    outputs = backbone(inputs)
    if pooling == "pooled":
        features = outputs["pooled_output"]
    elif pooling == "first_token":
        features = outputs[:, 0, :]
    else:
        last = keras.ops.sum(inputs["padding_mask"], axis=1, keepdims=True) - 1
        features = keras.ops.take_along_axis(outputs, keras.ops.expand_dims(last, -1), axis=1)[:, 0, :]
    features = keras.layers.Dropout(dropout, name="classifier_dropout")(features)
    logits = keras.layers.Dense(
        num_classes,
        kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        dtype="float32",
        name="classifier",
    )(features)
    return keras.Model(inputs, logits, name="text_classifier")
