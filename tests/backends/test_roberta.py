"""RoBERTa (no segment ids, no pooler) learns masked-LM and classification through kerasboost's models, on
the backend under test; its Hugging Face interop is in test_peft_interop.py, whole runs in e2e/test_recipes.py."""

from __future__ import annotations

import keras
import numpy as np

from kerasboost.models.backbone import build_backbone
from kerasboost.models.classifier import build_classifier
from kerasboost.models.mlm import build_mlm_model, mlm_loss_and_metrics
from kerasboost.recipe import ModelConfig

CONFIG = dict(num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64, dropout=0.0, max_sequence_length=16)
VOCAB = 64


def roberta():
    keras.utils.set_random_seed(0)
    return build_backbone(ModelConfig(backbone="roberta", config=CONFIG), VOCAB)


def fit(model, x, y, loss, epochs: int = 25) -> list[float]:
    # XLA on JAX (its eager mode runs op by op), none elsewhere: compiling costs more than these few steps.
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=loss, jit_compile=keras.backend.backend() == "jax")
    return model.fit(x, y, batch_size=len(y), epochs=epochs, verbose=0).history["loss"]


def test_masked_lm_learns_without_segment_ids():
    model = build_mlm_model(roberta())
    assert set(model.input) == {"token_ids", "padding_mask", "mask_positions"}
    rng = np.random.default_rng(0)
    ids = rng.integers(5, VOCAB, (8, 16)).astype("int32")
    x = {
        "token_ids": ids,
        "padding_mask": np.ones_like(ids),
        "mask_positions": np.tile(np.arange(3, dtype="int32"), (8, 1)),
    }
    history = fit(model, x, ids[:, :3], mlm_loss_and_metrics()[0])
    assert history[-1] < 0.5 * history[0], history


def test_classifier_on_the_first_token_learns():
    model = build_classifier(roberta(), 2, 0.0)
    rng = np.random.default_rng(0)
    ids = rng.integers(5, VOCAB, (16, 12)).astype("int32")
    ids[:, 0] = 0  # <s>, whose vector the head reads; the label is carried by a later token
    labels = (ids[:, 3] >= VOCAB // 2).astype("int32")
    x = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    history = fit(model, x, labels, keras.losses.SparseCategoricalCrossentropy(from_logits=True), epochs=40)
    assert history[-1] < 0.5 * history[0], history
