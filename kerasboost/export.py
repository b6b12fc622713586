"""Exports: the trained backbone and its tokenizer as a keras-hub preset directory."""

from __future__ import annotations

from pathlib import Path


def export_preset(backbone, tokenizer, directory: Path) -> Path:
    """A directory that `keras_hub.models.BertBackbone.from_preset(directory)` (and the tokenizer) load."""
    directory.mkdir(parents=True, exist_ok=True)
    backbone.save_to_preset(str(directory))
    tokenizer.save_to_preset(str(directory))
    return directory
