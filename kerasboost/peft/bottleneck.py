"""Bottleneck adapters: Houlsby et al. 2019, Pfeiffer et al. 2021 and He et al. 2022's parallel adapter.

An adapter is a small residual MLP on the hidden width, with b = hidden // reduction_factor:

    adapter(h) = s * (act(h D + d) U + u)      D: (hidden, b), U: (b, hidden), d, u biases, s = scaling

- houlsby (serial): the attention output projection and the feed-forward output projection each compute
  y -> y + adapter(y), on the sublayer's output before the block's dropout, residual add and layer norm.
- pfeiffer (serial): the same after the feed-forward output projection only.
- parallel: the feed-forward sublayer computes FFN(x) + adapter(x), x its input (He et al. scale by 4).

U, d and u start at zero and D at N(0, 0.02), so a wrapped model computes exactly what it did before. Unlike
LoRA's, the adapter's path has an activation between its projections: no base weight can absorb it, so
bottleneck adapters are never merged (adapter files keep them; a SavedModel traces them with the model).

Adapters are added as LoRA's are (lora.py): a built projection's class is swapped for a subclass that adds
variables but no nesting level, so weight paths stay keras-hub's, and the layer stores the base's variables
first, then the adapter's, so weights files, `--resume` and `eval` work unchanged.

Parallel placement needs x at the output projection. The feed-forward input projection's subclass also
returns act(x D + d) concatenated on the last axis of its activations (its own activation applies to its own
part only), and the output projection's subclass splits it off and adds its up-projection. keras-hub's blocks
call the two projections one right after the other, with nothing between them, so this is one traced graph on
every backend, with no tensor kept on a layer between calls (which leaks tracers under jit) and keras-hub's
block `call` left as it is (a block subclass would copy it, for the encoder and for the cached decoder). The
cost is b extra channels in the feed-forward activations.

Under a mixed policy the adapter stays float32: its variables are not autocast (`autocast=False`), it computes
from its input cast to float32, and its result is cast to the output's dtype. Between the two projections of a
parallel adapter act(x D + d) travels in the compute dtype.
"""

from __future__ import annotations

import functools

import keras
from keras import ops

from kerasboost.errors import InputError
from kerasboost.peft.lora import StoredAfterBase
from kerasboost.recipe import BottleneckConfig

ACTIVATIONS = {
    "swish": ops.silu,
    "relu": ops.relu,
    "gelu": functools.partial(ops.gelu, approximate=False),
}


class BottleneckLayer(StoredAfterBase):
    """Mixin for Dense / EinsumDense: the adapter's variables (those of the parts the layer computes), its
    two halves, and saving."""

    adapter_method = "bottleneck"
    _parts: tuple[str, ...] = ("down", "up")

    def _init_adapter(self, settings: BottleneckConfig, width: int, seed: int) -> None:
        self.adapter_settings = settings
        self.adapter_width = width
        self.adapter_down = self.adapter_down_bias = self.adapter_up = self.adapter_up_bias = None
        self._tracker.unlock()
        if "down" in self._parts:
            self.adapter_down = self._adapter_weight(
                "bottleneck_down", (self._hidden(), width), keras.initializers.RandomNormal(stddev=0.02, seed=seed)
            )
            self.adapter_down_bias = self._adapter_weight("bottleneck_down_bias", (width,), "zeros")
        if "up" in self._parts:
            self.adapter_up = self._adapter_weight("bottleneck_up", (width, self._hidden()), "zeros")
            self.adapter_up_bias = self._adapter_weight("bottleneck_up_bias", (self._hidden(),), "zeros")
        self._tracker.lock()

    def _adapter_weight(self, name: str, shape: tuple[int, ...], initializer):
        return self.add_weight(name=name, shape=shape, initializer=initializer, dtype="float32", autocast=False)

    @property
    def adapter_variables(self) -> list:
        """The adapter's trainable variables."""
        variables = (self.adapter_down, self.adapter_down_bias, self.adapter_up, self.adapter_up_bias)
        return [v for v in variables if v is not None]

    @property
    def adapter_state(self) -> list:
        """Non-trainable variables the adapter keeps (none)."""
        return []

    @property
    def adapter_shape(self) -> tuple[int, int]:
        """(in, out) of the adapter's part here: (hidden, b) for a whole adapter or its down-projection,
        (b, hidden) for a parallel adapter's up-projection."""
        return (self.adapter_width, self._hidden()) if self._parts == ("up",) else (self._hidden(), self.adapter_width)

    def _hidden(self) -> int:
        """The hidden width the adapter reads or writes: the output's last axis (the input's for the input
        projection of a parallel adapter)."""
        if isinstance(self, keras.layers.Dense):
            return self.units
        kernel, output = self.equation.split(",")[1].split("->")
        if kernel[-1] != output[-1]:
            raise ValueError(f"{self.path}: a bottleneck adapter needs the kernel's last axis last in the output")
        return int(self._kernel.shape[-1])

    def _down(self, inputs):
        """act(h D + d) in float32, for inputs h of any dtype."""
        hidden = ops.matmul(ops.cast(inputs, "float32"), self.adapter_down) + self.adapter_down_bias
        return ACTIVATIONS[self.adapter_settings.activation](hidden)

    def _up(self, hidden, dtype):
        """s * (z U + u), cast to `dtype`."""
        update = ops.matmul(ops.cast(hidden, "float32"), self.adapter_up) + self.adapter_up_bias
        return ops.cast(update * self.adapter_settings.scaling, dtype)

    # --- saving: the base layer's own variables first, then the adapter's -------------------------

    def _stored_variables(self) -> list:
        return [self._kernel, *([self.bias] if self.bias is not None else []), *self.adapter_variables]


class SerialBottleneck(BottleneckLayer):
    """A projection followed by a whole adapter: y -> y + adapter(y)."""

    def call(self, inputs, training=None):
        outputs = super().call(inputs, training=training)
        return outputs + self._up(self._down(outputs), outputs.dtype)


class SerialBottleneckDense(SerialBottleneck, keras.layers.Dense):
    pass


class SerialBottleneckEinsumDense(SerialBottleneck, keras.layers.EinsumDense):
    pass


class ParallelBottleneckInput(BottleneckLayer, keras.layers.Dense):
    """The feed-forward input projection: its activations, then act(x D + d) on the same last axis."""

    _parts = ("down",)

    def _hidden(self) -> int:
        return int(self._kernel.shape[0])

    def call(self, inputs, training=None):
        outputs = super().call(inputs, training=training)
        return ops.concatenate([outputs, ops.cast(self._down(inputs), outputs.dtype)], axis=-1)

    def compute_output_shape(self, input_shape):
        shape = super().compute_output_shape(input_shape)
        return (*shape[:-1], shape[-1] + self.adapter_width)


class ParallelBottleneckOutput(BottleneckLayer, keras.layers.Dense):
    """The feed-forward output projection: splits the input projection's extra channels off and adds their
    up-projection to its output."""

    _parts = ("up",)

    def call(self, inputs, training=None):
        own, hidden = ops.split(inputs, [int(self._kernel.shape[0])], axis=-1)
        outputs = super().call(own, training=training)
        return outputs + self._up(hidden, outputs.dtype)


def bottleneck_width(hidden: int, settings: BottleneckConfig) -> int:
    """b = hidden // reduction_factor."""
    width = hidden // settings.reduction_factor
    if width < 1:
        raise InputError(
            f"peft.bottleneck.reduction_factor: {settings.reduction_factor} leaves no bottleneck "
            f"of a hidden width of {hidden}"
        )
    return width


def attach_serial(layer, settings: BottleneckConfig, seed: int = 0):
    """Turns a built Dense or EinsumDense into its serial-adapter subclass in place."""
    _swap(layer, {keras.layers.Dense: SerialBottleneckDense, keras.layers.EinsumDense: SerialBottleneckEinsumDense})
    layer._init_adapter(settings, bottleneck_width(layer._hidden(), settings), seed)
    return layer


def attach_parallel(first, second, settings: BottleneckConfig, seed: int = 0) -> list:
    """Gives the feed-forward sublayer's two Dense projections (`first` feeds `second` directly) a parallel
    adapter: the down-projection on `first`, the up-projection on `second`."""
    _swap(first, {keras.layers.Dense: ParallelBottleneckInput})
    _swap(second, {keras.layers.Dense: ParallelBottleneckOutput})
    hidden = first._hidden()
    if hidden != second._hidden():
        raise ValueError(f"{first.path} reads width {hidden}, {second.path} writes {second._hidden()}")
    width = bottleneck_width(hidden, settings)
    first._init_adapter(settings, width, seed)
    second._init_adapter(settings, width, seed)
    fed = int(second._kernel.shape[0])
    second.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: fed + width})
    return [first, second]


def _swap(layer, classes: dict[type, type]) -> None:
    """Gives a plain layer of one of `classes`' keys its subclass (variables added later, no nesting level)."""
    if hasattr(layer, "adapter_variables"):
        raise ValueError(f"{layer.path}: already has an adapter")
    subclass = classes.get(type(layer))
    if subclass is None:
        raise ValueError(
            f"{layer.path}: bottleneck adapters here wrap {', '.join(c.__name__ for c in classes)}, "
            f"not {type(layer).__name__}"
        )
    layer.__class__ = subclass
