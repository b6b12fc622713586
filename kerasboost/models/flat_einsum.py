"""keras-hub's attention projections as one 2-D matmul each, for TensorFlow without XLA.

keras-hub's attention projects with `EinsumDense` (`abc,cde->abde` for query, key and value,
`abcd,cde->abe` for the output). TensorFlow's einsum runs that as a `BatchMatMul` whose kernel is
broadcast over the batch, and the kernel's gradient as one small matmul per example followed by a `Sum`
over the batch: smaller matmuls and an extra pass. Flattened, the same product is one
(batch x sequence, in) x (in, out) matmul each way, as a `Dense` layer's is. `EinsumDense` below does that
for every equation of that shape (inputs `batch + contracted`, kernel `contracted + free`, outputs
`batch + free`) and leaves others, Keras' own LoRA and quantized kernels to Keras. Only the layer's class
changes, and it keeps Keras' name, because Keras keys saved weights by class name (see layer_norm.py).
JAX and TensorFlow under XLA lower einsums to one dot already, so nothing is swapped there.
Measured in docs/performance.md.
"""

from __future__ import annotations

import functools
import math

import keras
from keras import ops

from kerasboost.models.kernel_swap import swap_class_for_tensorflow_graphs


@functools.cache
def flat_contraction(equation: str) -> int | None:
    """How many kernel axes an `EinsumDense` equation contracts, if it is a plain matmul over flattened
    axes (inputs `batch + contracted`, kernel `contracted + free`, outputs `batch + free`); else None. Cached:
    layers ask on every call, and LoRA's in eager PyTorch on every step."""
    inputs, rest = equation.split(",")
    kernel, outputs = rest.split("->")
    contracted = "".join(axis for axis in kernel if axis in inputs and axis not in outputs)
    batch = inputs[: len(inputs) - len(contracted)]
    if not contracted or not kernel.startswith(contracted) or not inputs.endswith(contracted):
        return None
    if outputs != batch + kernel[len(contracted) :] or len(set(kernel + inputs)) != len(kernel) + len(batch):
        return None
    return len(contracted)


def flat_product(inputs, kernel, contracted: int):
    """`inputs` times `kernel` over the last `contracted` input axes and the first kernel axes, as one
    2-D matmul: the result has the inputs' leading axes and then the kernel's remaining ones."""
    kernel_shape = tuple(kernel.shape)
    width, free = math.prod(kernel_shape[:contracted]), kernel_shape[contracted:]
    leading = ops.shape(inputs)[: len(inputs.shape) - contracted]
    flat = ops.matmul(ops.reshape(inputs, (-1, width)), ops.reshape(kernel, (width, math.prod(free))))
    return ops.reshape(flat, (*leading, *free))


class EinsumDense(keras.layers.EinsumDense):
    """`keras.layers.EinsumDense` computing flat equations as one 2-D matmul; named as Keras' class on
    purpose (see the module docstring)."""

    def call(self, inputs, training=None):
        contracted = flat_contraction(self.equation)
        if contracted is None or self.lora_enabled or self.quantization_mode:
            return super().call(inputs, training=training)
        outputs = flat_product(inputs, self.kernel, contracted)
        if self.bias is not None:
            outputs = ops.add(outputs, self.bias)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs


def use_flat_einsums(model: keras.Model, without_xla: bool) -> int:
    """Turns the plain `keras.layers.EinsumDense` layers of `model` into this module's when the backend
    is TensorFlow and the train step runs without XLA (`without_xla`); returns how many."""
    return swap_class_for_tensorflow_graphs(model, keras.layers.EinsumDense, EinsumDense, without_xla)
