"""LoRA, rsLoRA and DoRA for keras-hub's Dense and EinsumDense projections.

For a projection whose kernel W0 is viewed as a flat (in_features, out_features) matrix:

    LoRA:  y = W0 x + s * B A dropout(x),          s = alpha / r   (rsLoRA: alpha / sqrt(r))
    DoRA:  y = m / ||W0 + s B A||_col * (W0 x + s B A dropout(x))   (the norm is not differentiated)

A is (in, r) and B is (r, out) here, i.e. the transposes of Hugging Face PEFT's lora_A (r, in) and
lora_B (out, r). B starts at zero, so a wrapped model computes exactly what it did before.

Adapters are added by swapping a built layer's class for the subclass below (`attach_lora`), which adds
variables but no nesting level: weight paths stay what keras-hub expects, and the base kernel keeps its
own variable. The base product of an EinsumDense runs as one 2-D matmul over that flat view
(models/flat_einsum.py). The base may be quantized to int8 first (QLoRA-style): it is dequantized on the
fly, and only the adapters train.

Under a mixed policy the adapter stays float32: its variables are not autocast (`autocast=False`), and
DoRA's column norm reads the base kernel at its float32 storage dtype (outside Keras' autocast scope, which
would hand it over in bfloat16), as PEFT computes it under torch's autocast. Only the base product runs
at the compute dtype.
"""

from __future__ import annotations

import math

import keras
from keras import ops
from keras.src.backend import AutocastScope

from kerasboost.models.flat_einsum import flat_contraction, flat_product


class StoredAfterBase:
    """Saving for a projection with an adapter: `_stored_variables()` (the base layer's variables in the
    order Dense / EinsumDense store them, then the adapter's) by index, so weights files keep keras-hub's
    layout with the adapter's variables after it."""

    def _stored_variables(self) -> list:
        raise NotImplementedError

    def save_own_variables(self, store):
        for index, variable in enumerate(self._stored_variables()):
            store[str(index)] = variable

    def load_own_variables(self, store):
        variables = self._stored_variables()
        if len(store.keys()) != len(variables):
            raise ValueError(
                f"{self.path}: the weights file holds {len(store.keys())} variables, the adapted layer {len(variables)}"
            )
        for index, variable in enumerate(variables):
            variable.assign(store[str(index)])


class LoraLayer(StoredAfterBase):
    """Mixin for Dense / EinsumDense: the adapter variables and the forward pass above.

    Attributes are named `adapter_*` because Keras' Dense already owns `lora_*` for its built-in LoRA.
    """

    def _init_adapter(
        self, method: str, rank: int, alpha: float, dropout: float, rslora: bool, init: str, seed: int
    ) -> None:
        in_features, out_features = self.adapter_shape
        self.adapter_method = method
        self.adapter_rank = rank
        self.adapter_alpha = alpha
        self.adapter_rslora = rslora
        self.adapter_scale = alpha / (math.sqrt(rank) if rslora else rank)
        self.adapter_merged = False
        self._tracker.unlock()
        a_init = (
            keras.initializers.HeUniform(seed=seed)
            if init == "kaiming"
            else keras.initializers.RandomNormal(stddev=1.0 / rank, seed=seed)
        )
        self.adapter_a = self.add_weight(
            name="lora_a", shape=(in_features, rank), initializer=a_init, dtype="float32", autocast=False
        )
        self.adapter_b = self.add_weight(
            name="lora_b", shape=(rank, out_features), initializer="zeros", dtype="float32", autocast=False
        )
        self.adapter_magnitude = None
        if method == "dora":
            self.adapter_magnitude = self.add_weight(
                name="lora_magnitude", shape=(out_features,), initializer="zeros", dtype="float32", autocast=False
            )
            self.adapter_magnitude.assign(self._column_norm(self._flat_kernel()))
        self.adapter_dropout = keras.layers.Dropout(dropout, seed=seed, name="lora_dropout") if dropout else None
        self._tracker.lock()

    @property
    def adapter_variables(self) -> list:
        """The adapter's trainable variables."""
        return [v for v in (self.adapter_a, self.adapter_b, self.adapter_magnitude) if v is not None]

    @property
    def adapter_state(self) -> list:
        """Non-trainable variables the adapter keeps between steps (saved with it, never trained)."""
        return []

    # --- the flat (in, out) view of the kernel -------------------------------------------------

    @property
    def adapter_shape(self) -> tuple[int, int]:
        kernel_shape = tuple(self._kernel.shape)
        split = self._input_rank()
        return math.prod(kernel_shape[:split]), math.prod(kernel_shape[split:])

    def _input_rank(self) -> int:
        """How many leading kernel axes are contracted with the input (1 for Dense)."""
        return 1

    def _flat_kernel(self):
        """The base kernel as a float32 (in, out) matrix, at its storage precision even inside a
        mixed-precision call."""
        with AutocastScope(None):
            return ops.reshape(float_kernel(self), self.adapter_shape)

    def merged_kernel(self):
        """The kernel with the adapter folded in, in the kernel's shape, float32 (also for an int8 base)."""
        merged = self._flat_kernel() + self.adapter_delta()
        if self.adapter_magnitude is not None:
            merged = merged * (self.adapter_magnitude / self._column_norm(merged))
        return ops.reshape(merged, self._kernel.shape)

    def _column_norm(self, matrix):
        return ops.sqrt(ops.sum(ops.square(matrix), axis=0))

    def adapter_delta(self):
        """s * A B as a flat (in, out) matrix."""
        return self.adapter_scale * ops.matmul(self.adapter_a, self.adapter_b)

    def adapter_update(self, flat):
        """s * B A x for flat float32 inputs x (rows): the adapter's share of the output."""
        return ops.matmul(ops.matmul(flat, self.adapter_a), self.adapter_b) * self.adapter_scale

    # --- forward ---------------------------------------------------------------------------

    def _base(self, inputs, kernel):
        raise NotImplementedError

    def call(self, inputs, training=None):
        kernel = self._kernel if not self.quantization_mode else ops.cast(float_kernel(self), self.compute_dtype)
        outputs = self._base(inputs, kernel)
        if not self.adapter_merged:
            x = inputs if self.adapter_dropout is None else self.adapter_dropout(inputs, training=training)
            batch_shape = ops.shape(x)[: len(x.shape) - self._input_rank()]
            flat = ops.reshape(ops.cast(x, "float32"), (-1, self.adapter_shape[0]))
            update = self.adapter_update(flat)
            update = ops.reshape(update, (*batch_shape, *tuple(self._kernel.shape)[self._input_rank() :]))
            if self.adapter_magnitude is not None:
                norm = ops.stop_gradient(self._column_norm(self._flat_kernel() + self.adapter_delta()))
                scale = ops.reshape(self.adapter_magnitude / norm, tuple(self._kernel.shape)[self._input_rank() :])
                outputs = ops.cast(scale, outputs.dtype) * outputs
                update = scale * update
            outputs = outputs + ops.cast(update, outputs.dtype)
        if self.bias is not None:
            outputs = outputs + self.bias
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def quantized_call(self, *args, **kwargs):
        """Keras routes quantized layers here instead of `call`; ours handles the int8 base itself."""
        return self.call(*args, **kwargs)

    # --- merging ---------------------------------------------------------------------------

    def merge(self) -> None:
        """Folds the adapter into the base kernel; `unmerge` takes it out again (float bases only)."""
        if self.adapter_merged:
            return
        if self.quantization_mode:
            raise ValueError(f"{self.path}: an int8 base cannot hold merged weights; export a merged copy instead")
        if self.adapter_magnitude is not None:
            self._merged_norm = self._column_norm(self._flat_kernel() + self.adapter_delta())
        self._kernel.assign(ops.cast(self.merged_kernel(), self._kernel.dtype))
        self.adapter_merged = True

    def unmerge(self) -> None:
        if not self.adapter_merged:
            return
        weight = self._flat_kernel()
        if self.adapter_magnitude is not None:
            weight = weight * (self._merged_norm / self.adapter_magnitude)
        self._kernel.assign(
            ops.cast(ops.reshape(weight - self.adapter_delta(), self._kernel.shape), self._kernel.dtype)
        )
        self.adapter_merged = False

    # --- saving: the base layer's own variables first, then the adapter's -------------------------

    def _stored_variables(self) -> list:
        """Kernel, bias (and int8 scale) in the order Dense / EinsumDense store them, then the adapter's."""
        scale = [self.kernel_scale] if self.quantization_mode else []
        return [
            self._kernel,
            *([self.bias] if self.bias is not None else []),
            *scale,
            *self.adapter_variables,
            *self.adapter_state,
        ]


class LoraDense(LoraLayer, keras.layers.Dense):
    def _base(self, inputs, kernel):
        return ops.matmul(inputs, kernel)


class LoraEinsumDense(LoraLayer, keras.layers.EinsumDense):
    def _input_rank(self) -> int:
        contracted = flat_contraction(self.equation)
        if contracted is None:
            raise ValueError(f"LoRA needs the input axes first in the kernel and last in the input: {self.equation}")
        return contracted

    def _base(self, inputs, kernel):
        return flat_product(inputs, kernel, self._input_rank())


def float_kernel(layer):
    """A Dense / EinsumDense kernel as float32, dequantized when the layer holds an int8 kernel."""
    if not layer.quantization_mode:
        return ops.cast(layer._kernel, "float32")
    if layer.quantization_mode != "int8":
        raise ValueError(f"{layer.path}: only int8 bases are supported, not {layer.quantization_mode}")
    scale = (
        layer.kernel_scale
        if isinstance(layer, keras.layers.Dense)
        else layer._adjust_scale_for_dequant(layer.kernel_scale)
    )
    return ops.divide(ops.cast(layer._kernel, "float32"), ops.cast(scale, "float32"))


def attach_lora(
    layer,
    method: str = "lora",
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    rslora: bool = False,
    init: str = "kaiming",
    seed: int = 0,
):
    """Turns a built Dense or EinsumDense (float or int8-quantized) into its LoRA subclass in place."""
    swap_projection_class(layer, LoraDense, LoraEinsumDense)
    layer._init_adapter(method, rank, alpha, dropout, rslora, init, seed)
    return layer


def swap_projection_class(layer, dense: type, einsum_dense: type) -> None:
    """Gives a plain Dense the class `dense`, a plain EinsumDense `einsum_dense` (subclasses of
    `LoraLayer` that add variables but no nesting level, so weight paths stay keras-hub's)."""
    if isinstance(layer, LoraLayer):
        raise ValueError(f"{layer.path}: already has a LoRA adapter")
    if type(layer) is keras.layers.EinsumDense:
        layer.__class__ = einsum_dense
    elif type(layer) is keras.layers.Dense:
        layer.__class__ = dense
    else:
        raise ValueError(f"{layer.path}: LoRA wraps Dense and EinsumDense layers, not {type(layer).__name__}")
    layer._input_rank()  # refuses kernels that do not flatten to (in, out)
