"""AdaLoRA (Zhang et al. 2023) as Hugging Face PEFT implements it (`peft/tuners/adalora/`).

Each target projection gets an update in SVD form, P diag(E) Q, with P (in, r) and Q (r, out) here (PEFT's
lora_A (r, in) and lora_B (out, r) transposed) and E the r "singular values":

    y = W0 x + alpha / (r0 + 1e-5) * Q^T diag(E) P^T dropout(x)      r0 = init_rank, fixed

E starts at zero (outputs unchanged), P and Q at N(0, 0.02). After each optimizer step t (counted from 0,
as PEFT's `update_and_allocate(global_step)`), while t < T - tfinal, every entry w of P, E and Q updates
the EMAs of its sensitivity |w * dL/dw| (beta1) and of its uncertainty |sensitivity - EMA| (beta2). Its
score is their product; a triplet's score is E's score plus the mean score of its P column and Q row.
On allocation steps (t > tinit, t % delta_t == 0, and t = T - tfinal) the triplets across all layers
whose score is at most the (init total - budget)-th smallest are masked (E set to 0); the budget falls
from r0 per layer to `target_rank` per layer on a cubic schedule between tinit and T - tfinal. After
T - tfinal the last mask is re-applied at every step. A masked triplet still trains, and may come back
at the next allocation, as in PEFT. The mask is PEFT's `rank_pattern`.

The orthogonality regulariser, orth_reg_weight * mean over all P and Q of ||P^T P - I||_F (training
loss only), is added by each layer through `add_loss`.

Why our own: Keras has no AdaLoRA, and PEFT's runs on torch only. The layers reuse the LoRA machinery
(lora.py: class swap, flat kernel view, merge, saving); the allocation runs inside the optimizer step
(`AllocatesRanks`), in plain `keras.ops`, so it compiles with the step on every backend. Its schedule is
tabulated in Python (exactly PEFT's integer arithmetic), and its state (EMAs, masks) is optimizer variables,
so a checkpoint resumes the allocation exactly; each layer keeps a copy of its mask for adapter files.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from kerasboost.errors import InputError
from kerasboost.peft.lora import LoraDense, LoraEinsumDense, LoraLayer, swap_projection_class
from kerasboost.recipe import AdaLoraConfig

EPSILON = 1e-5  # PEFT's ranknum + 1e-5


class AdaLoraLayer(LoraLayer):
    """LoRA's layer with an SVD-form update P diag(E) Q and the rank mask of its last allocation."""

    def _init_adaptive(self, rank: int, alpha: float, dropout: float, seed: int) -> None:
        in_features, out_features = self.adapter_shape
        self.adapter_method = "adalora"
        self.adapter_rank = rank
        self.adapter_alpha = alpha
        self.adapter_rslora = False
        self.adapter_scale = alpha / (rank + EPSILON)
        self.adapter_merged = False
        self.adapter_magnitude = None
        self.orthogonality_weight = 0.0  # set by `attach_adalora` once the number of layers is known
        self._tracker.unlock()

        def weight(name, shape, initializer, trainable=True):
            return self.add_weight(
                name=name, shape=shape, initializer=initializer, dtype="float32", autocast=False, trainable=trainable
            )

        self.adapter_a = weight("lora_a", (in_features, rank), keras.initializers.RandomNormal(stddev=0.02, seed=seed))
        self.adapter_e = weight("lora_e", (rank,), "zeros")
        self.adapter_b = weight(
            "lora_b", (rank, out_features), keras.initializers.RandomNormal(stddev=0.02, seed=seed + 1)
        )
        # A copy of the allocator's mask (kept with the optimizer, where every backend's train step can
        # update it), refreshed before each checkpoint: what adapter files and PEFT's rank_pattern record.
        self.rank_mask = weight("rank_mask", (rank,), "ones", trainable=False)
        self.adapter_dropout = keras.layers.Dropout(dropout, seed=seed, name="lora_dropout") if dropout else None
        self._tracker.lock()

    @property
    def adapter_variables(self) -> list:
        return [self.adapter_a, self.adapter_e, self.adapter_b]

    @property
    def adapter_state(self) -> list:
        return [self.rank_mask]

    def adapter_delta(self):
        return self.adapter_scale * ops.matmul(self.adapter_a * self.adapter_e, self.adapter_b)

    def adapter_update(self, flat):
        return ops.matmul(ops.matmul(flat, self.adapter_a) * self.adapter_e, self.adapter_b) * self.adapter_scale

    def orthogonality(self):
        """||P^T P - I||_F + ||Q Q^T - I||_F."""
        identity = ops.eye(self.adapter_rank, dtype="float32")
        gram_p = ops.matmul(ops.transpose(self.adapter_a), self.adapter_a)
        gram_q = ops.matmul(self.adapter_b, ops.transpose(self.adapter_b))
        return ops.sqrt(ops.sum(ops.square(gram_p - identity))) + ops.sqrt(ops.sum(ops.square(gram_q - identity)))

    def call(self, inputs, training=None):
        if training and self.orthogonality_weight and not self.adapter_merged:
            self.add_loss(self.orthogonality_weight * self.orthogonality())
        return super().call(inputs, training=training)


class AdaLoraDense(AdaLoraLayer, LoraDense):
    pass


class AdaLoraEinsumDense(AdaLoraLayer, LoraEinsumDense):
    pass


def attach_adalora(layers: list, settings: AdaLoraConfig, alpha: float, dropout: float, seed: int) -> list:
    """Turns the chosen Dense / EinsumDense layers into AdaLoRA layers in place; the regulariser's weight
    is shared out over the 2 * len(layers) matrices, as PEFT averages it."""
    for index, layer in enumerate(layers):
        swap_projection_class(layer, AdaLoraDense, AdaLoraEinsumDense)
        layer._init_adaptive(settings.init_rank, alpha, dropout, seed + 2 * index)
        layer.orthogonality_weight = settings.orth_reg_weight / (2 * len(layers))
    return layers


def adaptive_layers(model: keras.Model) -> list[AdaLoraLayer]:
    return [layer for layer in model._flatten_layers(include_self=False) if isinstance(layer, AdaLoraLayer)]


def budget_schedule(settings: AdaLoraConfig, total_steps: int, layers: int) -> tuple[np.ndarray, np.ndarray]:
    """Per step t: the total rank allowed, and whether t allocates (PEFT's `budget_schedule`, with
    `update_and_allocate`'s forced allocation at t = T - tfinal and none after it)."""
    init_budget, target = settings.init_rank * layers, settings.target_rank * layers
    final = total_steps - settings.tfinal
    budgets, allocates = [], []
    for step in range(total_steps):
        if step <= settings.tinit:
            budget, allocate = init_budget, False
        elif step > final:
            budget, allocate = target, False
        else:
            fraction = 1 - (step - settings.tinit) / (final - settings.tinit)
            budget = int((init_budget - target) * (fraction**3) + target)
            allocate = step % settings.delta_t == 0 or step == final
        budgets.append(budget)
        allocates.append(allocate)
    return np.asarray(budgets, np.int32), np.asarray(allocates)


class RankAllocator:
    """Importance scores and the rank budget of a model's AdaLoRA layers, updated after each optimizer step.

    Its state (the EMAs and each layer's mask) is optimizer variables, made by `build`: the optimizer's
    state is what every backend's train step hands back updated (JAX's returns no other non-trainable
    variable), and what checkpoints hold with the slots."""

    def __init__(self, layers: list[AdaLoraLayer], settings: AdaLoraConfig, total_steps: int):
        self.layers = layers
        self.settings = settings
        self.total_steps = total_steps
        self.init_budget = sum(layer.adapter_rank for layer in layers)
        self.final_step = total_steps - settings.tfinal
        if settings.tinit >= self.final_step:
            raise InputError(
                f"peft.adalora: tinit ({settings.tinit}) and tfinal ({settings.tfinal}) leave no step to allocate "
                f"ranks in ({total_steps} training steps)"
            )
        self.budgets, self.allocates = budget_schedule(settings, total_steps, len(layers))
        self.importance: list[dict] = []
        self.masks: list = []

    def build(self, optimizer: keras.optimizers.Optimizer) -> None:
        for index, layer in enumerate(self.layers):
            pairs = {}
            for name, variable in (("a", layer.adapter_a), ("e", layer.adapter_e), ("b", layer.adapter_b)):
                pairs[name] = tuple(
                    optimizer.add_variable(variable.shape, "zeros", "float32", name=f"adalora_{index}_{kind}_{name}")
                    for kind in ("sensitivity", "uncertainty")
                )
            self.importance.append(pairs)
            self.masks.append(
                optimizer.add_variable((layer.adapter_rank,), "ones", "float32", name=f"adalora_{index}_mask")
            )

    def after_step(self, step, gradients: dict[int, object]) -> None:
        """PEFT's `update_and_allocate(step)`: `gradients` by variable id, the weights already updated."""
        settings = self.settings
        index = ops.clip(ops.cast(step, "int32"), 0, self.total_steps - 1)
        scoring = ops.less(step, self.final_step)
        scores = []
        for layer, pairs in zip(self.layers, self.importance):
            score = {}
            for name, variable in (("a", layer.adapter_a), ("e", layer.adapter_e), ("b", layer.adapter_b)):
                sensitivity, uncertainty = pairs[name]
                importance = ops.abs(variable.value * ops.cast(gradients[id(variable)], "float32"))
                smoothed = settings.beta1 * sensitivity.value + (1 - settings.beta1) * importance
                spread = settings.beta2 * uncertainty.value + (1 - settings.beta2) * ops.abs(importance - smoothed)
                sensitivity.assign(ops.where(scoring, smoothed, sensitivity.value))
                uncertainty.assign(ops.where(scoring, spread, uncertainty.value))
                score[name] = sensitivity.value * uncertainty.value
            # A triplet: E's score plus the mean scores of its P column and Q row.
            scores.append(score["e"] + ops.mean(score["a"], axis=0) + ops.mean(score["b"], axis=1))
        allocate = ops.take(ops.convert_to_tensor(self.allocates), index)
        budget = ops.take(ops.convert_to_tensor(self.budgets), index)
        ranked = ops.sort(ops.concatenate(scores))
        dropped = self.init_budget - budget  # PEFT's kthvalue(k = dropped): every score <= it is masked
        lowest_kept = ops.take(ranked, ops.maximum(dropped - 1, 0))
        threshold = ops.where(dropped > 0, lowest_kept, ops.convert_to_tensor(-np.inf, "float32"))
        masking = ops.logical_or(allocate, ops.greater(step, self.final_step))
        for layer, score, mask in zip(self.layers, scores, self.masks):
            mask.assign(ops.where(allocate, ops.cast(score > threshold, "float32"), mask.value))
            layer.adapter_e.assign(ops.where(masking, layer.adapter_e.value * mask.value, layer.adapter_e.value))

    def ranks(self) -> dict[str, int]:
        """Each layer's allocated rank (its unmasked triplets)."""
        return {
            layer.path: int(np.sum(keras.ops.convert_to_numpy(mask))) for layer, mask in zip(self.layers, self.masks)
        }

    def mirror(self) -> None:
        """Copies each mask into its layer (before a checkpoint: adapter files and exports read it there)."""
        for layer, mask in zip(self.layers, self.masks):
            layer.rank_mask.assign(keras.ops.convert_to_numpy(mask))  # a copy: JAX donates each buffer once

    def describe(self) -> list[str]:
        ranks = self.ranks()
        width = max(len(path) for path in ranks)
        lines = [f"adalora: total rank {sum(ranks.values())} of {self.init_budget} (target {self.target_budget})"]
        return lines + [f"  {path:<{width}}  {rank:>3}" for path, rank in ranks.items()]

    @property
    def target_budget(self) -> int:
        return self.settings.target_rank * len(self.layers)


class AllocatesRanks:
    """Mixed into an optimizer class: after each update, `rank_allocator` (set on the instance before the
    optimizer is built) scores the AdaLoRA variables with this step's gradients and allocates ranks."""

    rank_allocator: RankAllocator

    def build(self, variables):
        if self.built:  # a resumed run builds before loading, and Keras' trainer asks again
            return
        super().build(variables)
        self.rank_allocator.build(self)

    def _backend_apply_gradients(self, grads, trainable_variables):
        super()._backend_apply_gradients(grads, trainable_variables)
        gradients = {id(variable): grad for variable, grad in zip(trainable_variables, grads)}
        self.rank_allocator.after_step(self.iterations, gradients)  # counted after this
