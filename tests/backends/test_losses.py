"""Label smoothing on integer targets equals Keras' one-hot CategoricalCrossentropy(label_smoothing=...),
with the masked-LM reduction (mean over weighted slots) too."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerasboost.models.losses import SmoothedSparseCrossEntropy, sparse_cross_entropy
from kerasboost.models.mlm import masked_cross_entropy


@pytest.mark.parametrize("smoothing", [0.1, 0.3])
def test_smoothed_loss_is_keras_one_hot_label_smoothing(smoothing):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (4, 5, 11)).astype("float32")
    labels = rng.integers(0, 11, (4, 5))
    weights = (rng.random((4, 5)) > 0.4).astype("float32")
    one_hot = keras.ops.one_hot(labels, 11)
    theirs = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=smoothing, reduction=None)
    per_slot = keras.ops.convert_to_numpy(theirs(one_hot, logits))
    ours = SmoothedSparseCrossEntropy(smoothing, reduction=None)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ours(labels, logits)), per_slot, rtol=1e-5, atol=1e-6)
    masked = keras.ops.convert_to_numpy(masked_cross_entropy(smoothing)(labels, logits, sample_weight=weights))
    np.testing.assert_allclose(masked, (per_slot * weights).sum() / weights.sum(), rtol=1e-5)
    bf16 = keras.ops.convert_to_numpy(sparse_cross_entropy(smoothing)(labels, keras.ops.cast(logits, "bfloat16")))
    np.testing.assert_allclose(bf16, per_slot.mean(), rtol=2e-2)


def test_no_smoothing_is_keras_own_loss():
    assert type(sparse_cross_entropy(0.0)) is keras.losses.SparseCategoricalCrossentropy
