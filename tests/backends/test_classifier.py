"""Classifier heads on BERT (pooled [CLS]) and GPT-2 (last real token)."""

from __future__ import annotations

import keras
import numpy as np

from kerasboost.models.backbone import build_backbone
from kerasboost.models.classifier import build_classifier
from kerasboost.recipe import ModelConfig

CONFIG = dict(num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64, dropout=0.0, max_sequence_length=16)


def padded(ids, length):
    token_ids = np.zeros((1, length), "int32")
    token_ids[0, : len(ids)] = ids
    mask = np.zeros((1, length), "int32")
    mask[0, : len(ids)] = 1
    return {"token_ids": token_ids, "padding_mask": mask}


def test_gpt2_classifier_reads_the_last_real_token():
    keras.utils.set_random_seed(0)
    model = build_classifier(
        build_backbone(ModelConfig(backbone="gpt2", config=CONFIG), 100),
        3,
        0.0,
    )
    short, long = padded([5, 6, 7], 6), padded([5, 6, 7], 12)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(short)), keras.ops.convert_to_numpy(model(long)), atol=1e-5
    )
    other_last = padded([5, 6, 8], 6)
    assert not np.allclose(
        keras.ops.convert_to_numpy(model(short)), keras.ops.convert_to_numpy(model(other_last)), atol=1e-4
    )


def test_bert_classifier_outputs_float32_logits_per_class():
    keras.utils.set_random_seed(0)
    model = build_classifier(build_backbone(ModelConfig(config=CONFIG), 100), 4, 0.1)
    x = padded([2, 5, 6, 3], 8)
    x["segment_ids"] = np.zeros_like(x["token_ids"])
    logits = model(x)
    assert tuple(logits.shape) == (1, 4) and keras.backend.standardize_dtype(logits.dtype) == "float32"
