"""Putting adapters into a keras-hub model: which projections, what stays trainable, what it costs.

Targets are named after keras-hub's sublayers (`query`, `key`, `value`, `attention_output`,
`intermediate`, `output`; the private attribute names are in architectures/spec.py), or `all-linear`
for all six, or regular expressions on layer paths written `re:PATTERN`. `exclude` patterns remove
matches. Everything else is frozen, except the layers named in
`modules_to_save` (e.g. a classification head), which train in full. Bottleneck adapters
(`method: bottleneck`) sit where their placement says instead (architectures/spec.py, peft/bottleneck.py).
"""

from __future__ import annotations

import gc
import math
import re
from dataclasses import dataclass

import keras
import numpy as np

from kerasboost.architectures import Architecture, architecture_of
from kerasboost.architectures.spec import KERAS_HUB_PROJECTIONS, SELF_ATTENTION_ATTRIBUTE
from kerasboost.errors import InputError
from kerasboost.peft.adalora import attach_adalora
from kerasboost.peft.bottleneck import BottleneckLayer, attach_parallel, attach_serial
from kerasboost.peft.lora import LoraLayer, attach_lora
from kerasboost.recipe import PeftConfig

ALL_LINEAR = tuple(KERAS_HUB_PROJECTIONS.values())


@dataclass
class PeftReport:
    wrapped: list[tuple[str, int, int, int]]  # path, in_features, out_features, adapter parameters
    trainable: int
    total: int
    weight_bytes: tuple[int, int] | None = None  # with quantize_base: before and after quantizing

    def lines(self) -> list[str]:
        width = max(len(path) for path, *_ in self.wrapped)
        rows = [
            f"  {path:<{width}}  {fan_in:>5} -> {fan_out:<5}  {params:>8,}"
            for path, fan_in, fan_out, params in self.wrapped
        ]
        share = 100 * self.trainable / self.total
        lines = [
            f"peft: {len(self.wrapped)} layers wrapped",
            *rows,
            f"  trainable {self.trainable:,} of {self.total:,} parameters ({share:.2f} %)",
        ]
        if self.weight_bytes:
            before, after = self.weight_bytes
            lines.append(
                f"  int8 base: weights {before / 2**20:.2f} MiB -> {after / 2**20:.2f} MiB ({after / before:.0%})"
            )
        return lines


def projections(model: keras.Model) -> dict[str, tuple[keras.layers.Layer, str]]:
    """Every attention / feed-forward projection of the model's transformer blocks: path -> (layer, name)."""
    found = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        attention = getattr(layer, SELF_ATTENTION_ATTRIBUTE, None)
        for owner in (layer, attention):
            for attribute, name in KERAS_HUB_PROJECTIONS.items():
                sublayer = getattr(owner, attribute, None) if owner is not None else None
                if isinstance(sublayer, (keras.layers.Dense, keras.layers.EinsumDense)):
                    found[sublayer.path] = (sublayer, name)
    return found


def select_targets(model: keras.Model, config: PeftConfig) -> list[keras.layers.Layer]:
    targets = [config.targets] if isinstance(config.targets, str) else list(config.targets)
    names = set(ALL_LINEAR) if "all-linear" in targets else {t for t in targets if not t.startswith("re:")}
    unknown = names - set(ALL_LINEAR)
    if unknown:
        raise InputError(
            f"peft.targets: unknown target {sorted(unknown)[0]!r} "
            f"(choose from {', '.join(ALL_LINEAR)}, all-linear or re:PATTERN)"
        )
    patterns = [re.compile(t[3:]) for t in targets if t.startswith("re:")]
    excluded = [re.compile(p) for p in config.exclude]
    chosen = [
        layer
        for path, (layer, name) in sorted(projections(model).items())
        if (name in names or any(p.search(path) for p in patterns)) and not any(p.search(path) for p in excluded)
    ]
    if not chosen:
        raise InputError(f"peft.targets: {targets} match no layer of the model")
    return chosen


def apply_peft(model: keras.Model, config: PeftConfig, seed: int) -> PeftReport:
    """Adds adapters to the chosen projections and freezes every other variable but `modules_to_save`
    (with `quantize_base: int8`, after quantizing every transformer projection)."""
    if config.method == "bottleneck":
        return freeze_all_but(model, attach_bottlenecks(model, config, seed), config.modules_to_save)
    chosen = select_targets(model, config)
    memory = None
    if config.quantize_base:
        before = weight_bytes(model)
        quantize_projections(model)
        memory = (before, weight_bytes(model))
    if config.method == "adalora":
        attach_adalora(chosen, config.adalora, config.alpha, config.dropout, seed)
    for index, layer in enumerate(chosen if config.method in ("lora", "dora") else ()):
        attach_lora(
            layer, config.method, config.rank, config.alpha, config.dropout, config.rslora, config.init, seed + index
        )
    report = freeze_all_but(model, chosen, config.modules_to_save)
    report.weight_bytes = memory
    return report


def attach_bottlenecks(model: keras.Model, config: PeftConfig, seed: int) -> list[BottleneckLayer]:
    """Bottleneck adapters at the sites of `config.bottleneck.placement` in every block (targets, rank and
    alpha do not apply); returns the adapted layers (both projections of a parallel adapter)."""
    if config.quantize_base:
        raise InputError("peft.quantize_base: int8 bases are for LoRA, DoRA and AdaLoRA, not bottleneck adapters")
    settings = config.bottleneck
    sites = _architecture(model).bottleneck_sites[settings.placement]
    found = sorted(projections(model).items())
    if settings.placement != "parallel":
        chosen = [layer for _, (layer, name) in found if name in sites]
        return [attach_serial(layer, settings, seed + index) for index, layer in enumerate(chosen)]
    first, second = (
        {path.rpartition("/")[0]: layer for path, (layer, name) in found if name == site} for site in sites
    )
    if first.keys() != second.keys():
        raise ValueError(f"parallel bottleneck adapters need {sites[0]} and {sites[1]} in every block")
    adapted = []
    for index, block in enumerate(sorted(first)):
        adapted += attach_parallel(first[block], second[block], settings, seed + index)
    return adapted


def _architecture(model: keras.Model) -> Architecture:
    """The architecture of the backbone `model` is or holds."""
    for layer in model._flatten_layers(include_self=True):
        try:
            return architecture_of(layer)
        except KeyError:
            continue
    raise ValueError(f"{model.name}: holds no keras-hub backbone kerasboost knows")


def freeze_all_but(model: keras.Model, adapted: list, modules_to_save: list[str]) -> PeftReport:
    """Freezes every variable except the adapters of `adapted` and the layers named in `modules_to_save`."""
    saved = set()
    for name in modules_to_save:
        try:
            saved.update(id(v) for v in model.get_layer(name).variables)
        except ValueError:
            raise InputError(f"peft.modules_to_save: the model has no layer named {name!r}") from None
    adapters = {id(v) for layer in adapted for v in layer.adapter_variables}
    for variable in model.variables:
        if variable.trainable and id(variable) not in adapters | saved:
            variable.trainable = False
    wrapped = [
        (layer.path, *layer.adapter_shape, sum(math.prod(v.shape) for v in layer.adapter_variables))
        for layer in adapted
    ]
    trainable = sum(math.prod(v.shape) for v in model.trainable_variables)
    total = sum(math.prod(v.shape) for v in model.weights)
    return PeftReport(wrapped, trainable, total)


def quantize_projections(model: keras.Model) -> None:
    """Keras' int8 quantization of the frozen base's attention and feed-forward projections, with one garbage
    collection at the end: Keras' `Layer.__delattr__` runs a full `gc.collect()` for every float kernel a
    quantized layer drops, and in a process that holds a model and its graphs each pass takes a large
    fraction of a second, for every projection of every block."""
    collect = gc.collect
    gc.collect = lambda generation=2: 0
    try:
        for layer, _ in projections(model).values():
            if not layer.quantization_mode:
                layer.quantize("int8")
    finally:
        gc.collect = collect
    gc.collect()


def weight_bytes(model: keras.Model) -> int:
    """Bytes held by the model's weights, at their storage dtype."""
    return sum(math.prod(v.shape) * np.dtype(keras.backend.standardize_dtype(v.dtype)).itemsize for v in model.weights)


def adapter_layers(model: keras.Model) -> list[LoraLayer | BottleneckLayer]:
    return [layer for layer, _ in projections(model).values() if isinstance(layer, (LoraLayer, BottleneckLayer))]


def mergeable(model: keras.Model) -> bool:
    """Whether the base weights can absorb the model's adapters: not bottleneck adapters, whose path has an
    activation between its projections."""
    return not any(isinstance(layer, BottleneckLayer) for layer in adapter_layers(model))


def refuse_merging(model: keras.Model, what: str, why: str = "they cannot be merged into the base weights") -> None:
    """A one-line InputError for `what` (a command) on a model with bottleneck adapters."""
    if not mergeable(model):
        raise InputError(
            f"{what}: bottleneck adapters: {why}; use export --format adapter (the adapters alone) "
            "or --format saved_model (the whole model, adapters included)"
        )


def merge_adapters(model: keras.Model) -> None:
    refuse_merging(model, "merge")
    for layer in adapter_layers(model):
        layer.merge()


def unmerge_adapters(model: keras.Model) -> None:
    for layer in adapter_layers(model):
        if isinstance(layer, LoraLayer):  # bottleneck adapters are never merged
            layer.unmerge()
