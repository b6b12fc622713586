"""Model FLOPs per token and the device's measured matmul peak: what MFU is made of.

Training FLOPs per token follow PaLM (Chowdhery et al. 2022, appendix B): 6N + 12·L·S·H, where N counts
the weights every token passes through (2N forward, 2N for the input gradients, 2N for the weight
gradients) and 12·L·S·H is attention's score and value products. Refinements keep the count honest for
these tasks: frozen weights (LoRA's base) get no weight gradient, so they cost 4 instead of 6 per
parameter; and a weight counts only at the positions its layer runs on. The transformer layers run on
every position; the masked-LM head (its dense layer, and the output projection onto the vocabulary, tied
to the token embedding) on the `max_predictions` slots; BERT's pooler, the next-sentence and the
classification heads on one vector per sequence; a causal LM projects every position onto the vocabulary.
Lookup tables (token, position, segment embeddings) cost nothing as lookups.

MFU divides the achieved FLOP rate by a peak measured here (a large matmul in the compute dtype), not
by a datasheet number, so it is meaningful on a laptop CPU as on an accelerator.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import keras
import numpy as np

from kerasboost.architectures import architecture_of
from kerasboost.tasks.task import Task


@dataclass(frozen=True)
class Speed:
    """Turns tokens/s into MFU: FLOPs per token over the peak FLOP/s of all the run's devices."""

    flops_per_token: float
    peak_flops: float

    def mfu(self, tokens_per_second: float) -> float:
        return tokens_per_second * self.flops_per_token / self.peak_flops


def flops_per_token(task: Task) -> float:
    """Training FLOPs per token of sequence for `task.model` (see the module docstring)."""
    model, backbone, sequence = task.model, task.backbone, task.batches.tokens_per_example
    embedding_paths = {variable.path for variable in backbone.weights if variable.path.endswith("embeddings")}
    dense = [variable for variable in model.weights if variable.path not in embedding_paths and _is_weight(variable)]
    trainable = {id(variable) for variable in model.trainable_weights}
    shares = _position_shares(backbone, sequence, task.logits_per_token)
    per_token = sum(
        (6 if id(variable) in trainable else 4) * int(np.prod(variable.shape)) * shares(variable) for variable in dense
    )
    layers, hidden = backbone.num_layers, backbone.hidden_dim
    per_token += 12 * layers * sequence * hidden
    token_embedding = backbone.token_embedding.embeddings
    output = 6 if token_embedding.trainable else 4
    per_token += output * backbone.vocabulary_size * hidden * task.logits_per_token
    return float(per_token)


def _position_shares(backbone, sequence: int, logits_per_token: float):
    """The share of a sequence's positions each weight's layer runs on (see the module docstring)."""
    per_sequence = 1.0 / sequence
    in_backbone = {id(variable) for variable in backbone.weights}
    once = architecture_of(backbone).per_sequence_layers
    pooler = {id(variable) for layer in backbone.layers if layer.name in once for variable in layer.weights}

    def share(variable) -> float:
        if id(variable) in in_backbone:
            return per_sequence if id(variable) in pooler else 1.0
        return logits_per_token if variable.path.startswith("mlm_head/") else per_sequence

    return share


def matmul_peak(dtype: str, size: int = 1024, repeats: int = 8) -> float:
    """The best FLOP/s of a (size x size) @ (size x size) matmul in `dtype` on the current backend."""
    return matmul_rate((size, size), (size, size), dtype, repeats)


def matmul_rate(left: tuple[int, ...], right: tuple[int, ...], dtype: str, repeats: int = 8) -> float:
    """The best FLOP/s of a (batched) `left` @ `right` matmul in `dtype` on the current backend."""
    a = keras.random.normal(left, dtype=dtype, seed=0)
    b = keras.random.normal(right, dtype=dtype, seed=1)

    def one_matmul():  # fetching one element waits for the product (float32: numpy has no bfloat16)
        keras.ops.convert_to_numpy(keras.ops.cast(keras.ops.matmul(a, b)[..., 0, 0], "float32"))

    one_matmul()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        one_matmul()
        best = min(best, time.perf_counter() - started)
    return 2.0 * float(np.prod(left)) * right[-1] / best


def compute_dtype() -> str:
    return keras.config.dtype_policy().compute_dtype


def _is_weight(variable) -> bool:
    """Float weights, and int8 ones (a quantized base still multiplies); not RNG states or counters."""
    dtype = str(variable.dtype)
    return "float" in dtype or dtype == "int8"
