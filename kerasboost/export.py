"""Exports: the trained backbone and its tokenizer as a keras-hub preset directory; the task's model as ONNX.

A backbone with adapters (or an int8 base) is exported merged: adapters are folded into a plain float
copy of the backbone, so the preset holds no LoRA layer and loads with plain keras-hub. Bottleneck adapters
cannot be merged (peft/bottleneck.py): only the frozen base (`merge=False`) exports without them.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from kerasboost.peft.inject import adapter_layers, projections, refuse_merging
from kerasboost.peft.lora import LoraLayer, float_kernel


def export_preset(backbone, tokenizer, directory: Path) -> Path:
    """A directory that `keras_hub.models.Backbone.from_preset(directory)` (and the tokenizer) load."""
    merged = merged_backbone(backbone)  # refuses bottleneck adapters before anything is written
    directory.mkdir(parents=True, exist_ok=True)
    merged.save_to_preset(str(directory))
    tokenizer.save_to_preset(str(directory))
    return directory


def merged_backbone(backbone):
    """`backbone` itself when its layers are all plain float ones, else a plain float copy with every
    adapter merged in and every int8 kernel dequantized."""
    return plain_backbone(backbone, merge=True)


def plain_backbone(backbone, merge: bool):
    """A plain float copy of `backbone`: adapters merged in (`merge`) or left out (the frozen base)."""
    if merge:
        refuse_merging(backbone, "a merged export")
    wrapped = {id(layer) for layer in adapter_layers(backbone)}
    special = [layer for layer, _ in projections(backbone).values() if id(layer) in wrapped or layer.quantization_mode]
    if not special:
        return backbone
    # An int8 base records its layers' quantized policies in the config's dtype: build with plain ones.
    plain = type(backbone).from_config({**backbone.get_config(), "dtype": keras.config.dtype_policy().name})
    values = {variable.path: variable for variable in backbone.weights}
    for layer in special:
        adapted = merge and isinstance(layer, LoraLayer)
        values[f"{layer.path}/kernel"] = layer.merged_kernel() if adapted else float_kernel(layer)
    for variable in plain.weights:
        variable.assign(keras.ops.cast(keras.ops.reshape(values[variable.path], variable.shape), variable.dtype))
    return plain


def export_onnx(model: keras.Model, directory: Path, sequence_length: int) -> Path:
    """`directory`/model.onnx: the task's model through Keras' ONNX export (tf2onnx, tensorflow backend), its
    int32 inputs by name (token_ids, padding_mask, and segment_ids where the architecture has them) for any
    batch size and length, its output the task's logits. The model must run in float32 (ONNX Runtime's CPU
    kernels have no bfloat16 matmul)."""
    directory.mkdir(parents=True, exist_ok=True)
    # Keras exports only a model that has been called.
    model({layer.name: np.ones((1, sequence_length), "int32") for layer in model.inputs})
    model.export(str(directory / "model.onnx"), format="onnx", verbose=False)
    return directory
