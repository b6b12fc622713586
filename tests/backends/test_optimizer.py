"""AdamW, the warm-up/decay schedule and weight-decay exclusions, on the backend under test."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from kerasboost.recipe import TrainConfig
from kerasboost.train.fused_adamw import FusedAdamW
from kerasboost.train.optimizer import WarmupDecay, build_optimizer


def value(schedule, step):
    return float(keras.ops.convert_to_numpy(schedule(step)))


@pytest.mark.parametrize("kind", ["linear", "cosine", "constant"])
def test_warmup_then_decay(kind):
    schedule = WarmupDecay(peak=1.0, warmup_steps=10, total_steps=110, kind=kind, end=0.1)
    assert value(schedule, 0) == pytest.approx(0.1)
    assert value(schedule, 4) == pytest.approx(0.5)
    assert value(schedule, 10) == pytest.approx(1.0)
    halfway = {"linear": 0.55, "cosine": 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)), "constant": 1.0}[kind]
    assert value(schedule, 60) == pytest.approx(halfway, rel=1e-5)
    assert value(schedule, 500) == pytest.approx(0.1 if kind != "constant" else 1.0)
    restored = WarmupDecay.from_config(schedule.get_config())
    assert value(restored, 37) == pytest.approx(value(schedule, 37))


def test_layer_norm_and_biases_get_no_weight_decay():
    inputs = keras.Input((4,))
    outputs = keras.layers.LayerNormalization()(keras.layers.Dense(3)(inputs))
    model = keras.Model(inputs, outputs)
    for variable in model.trainable_variables:
        variable.assign(np.ones(variable.shape, "float32"))
    optimizer = build_optimizer(
        TrainConfig(learning_rate=0.1, weight_decay=0.5, warmup_steps=0, schedule="constant", clip_norm=None),
        total_steps=10,
    )
    optimizer.apply_gradients([(keras.ops.zeros(v.shape), v) for v in model.trainable_variables])
    after = {v.name: keras.ops.convert_to_numpy(v) for v in model.trainable_variables}
    assert np.allclose(after["kernel"], 1 - 0.1 * 0.5)  # decayed: w -= lr * wd * w
    for name in ("bias", "gamma", "beta"):
        assert np.allclose(after[name], 1.0), name


def test_tensorflow_gets_its_fused_adam_kernel():
    """TensorFlow trains with FusedAdamW (tested in test_fused_adamw.py); JAX and PyTorch with Keras' AdamW."""
    tensorflow = keras.backend.backend() == "tensorflow"
    optimizer = build_optimizer(TrainConfig(), 10)
    assert isinstance(optimizer, keras.optimizers.AdamW) and isinstance(optimizer, FusedAdamW) == tensorflow
    if not tensorflow:
        with pytest.raises(ValueError, match="ApplyAdam"):
            FusedAdamW()
