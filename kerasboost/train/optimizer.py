"""AdamW with BERT's conventions: warm-up then decay, no weight decay on LayerNorm and biases."""

from __future__ import annotations

import math

import keras
from keras import ops

from kerasboost.recipe import TrainConfig
from kerasboost.train.fused_adamw import FusedAdamW

# Biases and LayerNorm scales/offsets. Keras matches this against the variable's name: "bias" on JAX and
# torch, "dense/bias:0" on TensorFlow.
NO_WEIGHT_DECAY = r"(^|/)(bias|gamma|beta)(:\d+)?$"


@keras.saving.register_keras_serializable(package="kerasboost")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `peak` over `warmup_steps`, then linear or cosine decay to `end` at `total_steps`."""

    def __init__(self, peak: float, warmup_steps: int, total_steps: int, kind: str = "linear", end: float = 0.0):
        self.peak = peak
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.kind = kind
        self.end = end

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = self.peak * ops.minimum(1.0, (step + 1.0) / max(self.warmup_steps, 1))
        if self.kind == "constant":
            return warm
        progress = ops.clip((step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1), 0.0, 1.0)
        fraction = 0.5 * (1.0 + ops.cos(math.pi * progress)) if self.kind == "cosine" else 1.0 - progress
        return ops.where(step < self.warmup_steps, warm, self.end + (self.peak - self.end) * fraction)

    def get_config(self) -> dict:
        return {
            "peak": self.peak,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "kind": self.kind,
            "end": self.end,
        }


def build_schedule(config: TrainConfig, total_steps: int) -> WarmupDecay:
    return WarmupDecay(
        config.learning_rate, config.warmup_steps, total_steps, config.schedule, config.end_learning_rate
    )


def build_optimizer(config: TrainConfig, total_steps: int) -> keras.optimizers.AdamW:
    """AdamW on `WarmupDecay`; `total_steps` counts optimizer updates, not micro-batches. On TensorFlow,
    `FusedAdamW` (TensorFlow's Adam kernel, sparse gradients summed first) unless `kernels: keras`;
    elsewhere Keras' own."""
    fused = keras.backend.backend() == "tensorflow" and config.kernels == "auto"
    optimizer = (FusedAdamW if fused else keras.optimizers.AdamW)(
        learning_rate=build_schedule(config, total_steps),
        weight_decay=config.weight_decay,
        beta_1=config.beta_1,
        beta_2=config.beta_2,
        epsilon=config.epsilon,
        global_clipnorm=config.clip_norm,
        gradient_accumulation_steps=config.gradient_accumulation if config.gradient_accumulation > 1 else None,
    )
    optimizer.exclude_from_weight_decay(var_names=[NO_WEIGHT_DECAY])
    return optimizer
