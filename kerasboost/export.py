"""Exports: the trained backbone and its tokenizer as a keras-hub preset directory.

A backbone with adapters is exported merged: adapters are folded into a plain copy of the backbone, so
the preset holds no LoRA layer and loads with plain keras-hub.
"""

from __future__ import annotations

from pathlib import Path

from kerasboost.peft.inject import adapter_layers, merge_adapters, unmerge_adapters


def export_preset(backbone, tokenizer, directory: Path) -> Path:
    """A directory that `keras_hub.models.Backbone.from_preset(directory)` (and the tokenizer) load."""
    directory.mkdir(parents=True, exist_ok=True)
    merged_backbone(backbone).save_to_preset(str(directory))
    tokenizer.save_to_preset(str(directory))
    return directory


def merged_backbone(backbone):
    """`backbone` itself when it has no adapter, else a plain copy with the adapters merged in."""
    if not adapter_layers(backbone):
        return backbone
    plain = type(backbone).from_config(backbone.get_config())
    merge_adapters(backbone)
    try:
        values = {variable.path: variable for variable in backbone.weights}
        for variable in plain.weights:
            variable.assign(values[variable.path])
    finally:
        unmerge_adapters(backbone)
    return plain
