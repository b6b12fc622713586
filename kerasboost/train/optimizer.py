"""AdamW with BERT's conventions: warm-up then decay, no weight decay on LayerNorm and biases; and, with
`train.nonfinite: skip`, an update that leaves no trace when it would make a weight NaN or Inf."""

from __future__ import annotations

import math

import keras
from keras import ops

from kerasboost.peft.adalora import AllocatesRanks, RankAllocator
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


class SkipsNonFiniteSteps:
    """Mixed into an optimizer class: an update that would leave a non-finite weight or slot is undone
    (weights, slots and accumulators keep their values; `iterations` still counts the step, so the
    schedule stays on the run's steps) and counted in `skipped_steps`, a variable checkpointed with the
    optimizer. Judged on the updated values rather than the gradients, so a NaN loss, an Inf gradient and
    an overflowing slot are all caught, on every backend with plain `keras.ops` (Keras' JAX optimizer
    selects accumulator updates the same way). Costs a copy of the weights and slots per step."""

    def build(self, variables):
        if self.built:  # a resumed run builds before loading, and Keras' trainer asks again
            return
        super().build(variables)
        self.skipped_steps = self.add_variable((), initializer="zeros", dtype="int32", name="skipped_steps")

    def _backend_apply_gradients(self, grads, trainable_variables):
        own = {id(self.iterations), id(self.skipped_steps)}
        state = [v for v in (*trainable_variables, *self.variables) if id(v) not in own]
        before = [ops.copy(v.value) for v in state]
        super()._backend_apply_gradients(grads, trainable_variables)
        finite = ops.all(ops.stack([ops.all(ops.isfinite(v.value)) for v in state]))
        for variable, old in zip(state, before):
            variable.assign(ops.where(finite, variable.value, old))
        self.skipped_steps.assign_add(ops.where(finite, 0, 1))


def build_optimizer(
    config: TrainConfig, total_steps: int, rank_allocator: RankAllocator | None = None
) -> keras.optimizers.AdamW:
    """AdamW on `WarmupDecay`; `total_steps` counts optimizer updates, not micro-batches. On TensorFlow,
    `FusedAdamW` (TensorFlow's Adam kernel, sparse gradients summed first) unless `kernels: keras`;
    elsewhere Keras' own; `AllocatesRanks` mixed in for an AdaLoRA model's `rank_allocator`, and
    `SkipsNonFiniteSteps` around both with `nonfinite: skip` (a skipped step leaves the allocation as it was)."""
    fused = keras.backend.backend() == "tensorflow" and config.kernels == "auto"
    kind = FusedAdamW if fused else keras.optimizers.AdamW
    if rank_allocator is not None:
        kind = type(f"Allocating{kind.__name__}", (AllocatesRanks, kind), {})
    if config.nonfinite == "skip":
        kind = type(f"Skipping{kind.__name__}", (SkipsNonFiniteSteps, kind), {})
    optimizer = kind(
        learning_rate=build_schedule(config, total_steps),
        weight_decay=config.weight_decay,
        beta_1=config.beta_1,
        beta_2=config.beta_2,
        epsilon=config.epsilon,
        global_clipnorm=config.clip_norm,
        gradient_accumulation_steps=config.gradient_accumulation if config.gradient_accumulation > 1 else None,
    )
    optimizer.exclude_from_weight_decay(var_names=[NO_WEIGHT_DECAY])
    if rank_allocator is not None:
        optimizer.rank_allocator = rank_allocator
    return optimizer
