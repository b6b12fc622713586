"""Backbones from a recipe's `model:` section: an explicit config, or a local preset directory.

`model.preset` may be a keras-hub preset directory (e.g. an earlier run's export) or a Hugging Face
checkpoint directory (config.json + *.safetensors), read by models/hugging_face.py. Nothing is downloaded.
"""

from __future__ import annotations

import keras
import keras_hub

from kerasboost.architectures import architecture
from kerasboost.errors import InputError
from kerasboost.models.hugging_face import backbone_from_checkpoint, is_hugging_face_checkpoint, open_checkpoint
from kerasboost.recipe import ModelConfig
from kerasboost.rundir import preset_directory


def build_backbone(config: ModelConfig, vocabulary_size: int):
    """The keras-hub backbone named by `config.backbone`, built under the current dtype policy."""
    spec = architecture(config.backbone)
    backbone_class = getattr(keras_hub.models, spec.backbone_class)
    if config.preset:
        preset = preset_directory(config.preset)
        if is_hugging_face_checkpoint(preset):
            return backbone_from_checkpoint(open_checkpoint(preset, spec), backbone_class, vocabulary_size)
        if not (preset / "config.json").is_file():
            raise InputError(
                f"model.preset: {preset} holds no config.json "
                "(neither a keras-hub preset nor a Hugging Face checkpoint)"
            )
        backbone = backbone_class.from_preset(str(preset), dtype=keras.config.dtype_policy())
        if backbone.vocabulary_size != vocabulary_size:
            raise InputError(
                f"model.preset: the backbone's vocabulary has {backbone.vocabulary_size} tokens "
                f"but the tokenizer has {vocabulary_size}"
            )
        return backbone
    return backbone_class(vocabulary_size=vocabulary_size, **config.config.model_dump())
