"""The private keras-hub and Keras names kerasboost relies on still exist (pyproject bounds keras and
keras-hub for this reason): each failure names the attribute that moved."""

from __future__ import annotations

import re

import keras
import keras_hub
import pytest

from kerasboost.architectures import NAMES, architecture
from kerasboost.architectures.spec import SELF_ATTENTION_ATTRIBUTE
from kerasboost.models.backbone import build_backbone
from kerasboost.peft.inject import projections
from kerasboost.recipe import ModelConfig

CONFIG = dict(num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64, dropout=0.0, max_sequence_length=16)


@pytest.fixture(scope="module", params=NAMES)
def built(request):
    keras.utils.set_random_seed(0)
    return architecture(request.param), build_backbone(ModelConfig(backbone=request.param, config=CONFIG), 100)


def test_keras_hub_classes_exist(built):
    spec, _ = built
    for name in filter(None, (spec.backbone_class, spec.tokenizer_class, spec.causal_lm_class)):
        assert hasattr(keras_hub.models, name), f"keras_hub.models.{name} is gone"


def test_every_block_has_the_projections_by_their_private_names(built):
    spec, backbone = built
    for block in backbone.transformer_layers:
        owners = (block, getattr(block, SELF_ATTENTION_ATTRIBUTE, None))
        assert owners[1] is not None, f"{type(block).__name__}.{SELF_ATTENTION_ATTRIBUTE} is gone"
        for attribute in spec.projections:
            assert any(hasattr(owner, attribute) for owner in owners), f"{type(block).__name__}: no {attribute}"
    assert len(projections(backbone)) == len(spec.targets) * CONFIG["num_layers"]


def test_every_layout_pattern_matches_a_variable(built):
    spec, backbone = built
    paths = [variable.path for variable in backbone.weights]
    for pattern in spec.layout:
        assert any(re.fullmatch(pattern, path) for path in paths), (
            f"layout pattern {pattern} matches no variable of {spec.name}"
        )


def test_per_sequence_layers_exist(built):
    spec, backbone = built
    names = {layer.name for layer in backbone.layers}
    assert set(spec.per_sequence_layers) <= names, f"{spec.name}: no layer {set(spec.per_sequence_layers) - names}"


def test_private_keras_names_exist():
    from keras.src.backend import AutocastScope  # noqa: F401  (peft/lora.py: DoRA's float32 column norm)

    dense = keras.layers.Dense(2)
    dense.build((None, 3))
    for attribute in ("_kernel", "_tracker", "_flatten_layers", "quantization_mode"):
        assert hasattr(dense, attribute), f"keras.layers.Dense.{attribute} is gone"
