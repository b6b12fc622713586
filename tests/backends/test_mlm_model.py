"""The MLM model: tied head, padding-free loss, gradient accumulation and mixed precision."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerasboost.backend import jax_has_only_cpus, use_precision
from kerasboost.errors import InputError
from kerasboost.models.backbone import build_backbone
from kerasboost.models.mlm import build_mlm_model, mlm_loss_and_metrics
from kerasboost.recipe import ModelConfig, TrainConfig
from kerasboost.train.optimizer import build_optimizer

VOCAB = 300
CONFIG = ModelConfig(
    config=dict(num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64, dropout=0.0, max_sequence_length=32)
)


def batch(rows=8, length=16, predictions=4, seed=0):
    rng = np.random.default_rng(seed)
    x = {
        "token_ids": rng.integers(5, VOCAB, (rows, length)).astype("int32"),
        "segment_ids": np.zeros((rows, length), "int32"),
        "padding_mask": np.ones((rows, length), "int32"),
        "mask_positions": rng.integers(1, length, (rows, predictions)).astype("int32"),
    }
    labels = rng.integers(5, VOCAB, (rows, predictions)).astype("int32")
    weights = np.ones((rows, predictions), "float32")
    weights[:, -1] = 0.0
    return x, labels, weights


def model_and_loss(seed=1):
    keras.utils.set_random_seed(seed)
    model = build_mlm_model(build_backbone(CONFIG, VOCAB))
    loss, metrics = mlm_loss_and_metrics()
    return model, loss, metrics


def test_head_is_tied_to_the_token_embedding():
    model, _, _ = model_and_loss()
    embeddings = [v for v in model.trainable_variables if v.path.endswith("token_embedding/embeddings")]
    assert len(embeddings) == 1
    assert not any("mlm_head" in v.path and tuple(v.shape) == (32, VOCAB) for v in model.variables)
    assert not any("pooled_dense" in v.path for v in model.trainable_variables)


def test_loss_averages_over_real_masked_slots_only():
    model, loss, _ = model_and_loss()
    x, labels, weights = batch()
    logits = model(x)
    full = float(keras.ops.convert_to_numpy(loss(labels, logits, sample_weight=weights)))
    real = float(keras.ops.convert_to_numpy(loss(labels[:, :-1], logits[:, :-1])))
    assert full == pytest.approx(real, rel=1e-5)
    garbage = labels.copy()
    garbage[:, -1] = 7
    assert float(keras.ops.convert_to_numpy(loss(garbage, logits, sample_weight=weights))) == pytest.approx(
        full, rel=1e-6
    )


def trained_weights(accumulation: int, micro_batch: int | None = None):
    model, loss, metrics = model_and_loss()
    # A large epsilon keeps Adam from amplifying float noise in near-zero gradients into full-size steps.
    config = TrainConfig(
        batch_size=8,
        gradient_accumulation=accumulation,
        learning_rate=1e-2,
        epsilon=1e-3,
        warmup_steps=0,
        schedule="constant",
    )
    model.compile(optimizer=build_optimizer(config, total_steps=2), loss=loss, weighted_metrics=metrics)
    x, labels, weights = batch(rows=16)
    model.fit(
        x,
        labels,
        sample_weight=weights,
        batch_size=micro_batch or 8 // accumulation,
        epochs=1,
        shuffle=False,
        verbose=0,
    )
    return [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]


def test_gradient_accumulation_matches_the_full_batch():
    full, accumulated = trained_weights(1), trained_weights(2)
    for a, b in zip(full, accumulated):
        np.testing.assert_allclose(a, b, atol=1e-4)
    small_steps = trained_weights(1, micro_batch=4)  # what accumulation must not be: an update per micro-batch
    assert max(np.abs(a - b).max() for a, b in zip(full, small_steps)) > 1e-3


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_trains_with_float32_logits(policy):
    if policy == "mixed_float16" and keras.backend.backend() == "jax" and jax_has_only_cpus():
        with pytest.raises(InputError, match="train.precision: mixed_float16 .* use mixed_bfloat16"):
            use_precision(policy)
        return
    use_precision(policy)
    try:
        model, loss, metrics = model_and_loss()
        model.compile(
            optimizer=build_optimizer(TrainConfig(learning_rate=1e-2, warmup_steps=0), total_steps=5),
            loss=loss,
            weighted_metrics=metrics,
        )
        x, labels, weights = batch()
        assert keras.backend.standardize_dtype(model(x).dtype) == "float32"
        history = model.fit(x, labels, sample_weight=weights, epochs=3, verbose=0)
        losses = history.history["loss"]
        assert all(np.isfinite(losses)) and losses[-1] < losses[0]
        assert all(v.dtype == "float32" for v in model.trainable_variables)
    finally:
        keras.config.set_dtype_policy("float32")
