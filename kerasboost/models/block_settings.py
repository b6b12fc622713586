"""Two settings keras-hub fixes when it builds a backbone and Hugging Face checkpoints carry in config.json:
the feed-forward GELU (BERT and GPT-2 tanh-approximated, RoBERTa exact) and the layer-norm epsilon. Read
and changed here in place (the Dense layer's `activation`, the norm's `epsilon`: no weight changes), so a
loaded checkpoint computes as transformers does, and the masked-LM head matches its backbone as
Hugging Face's does (one `hidden_act` and `layer_norm_eps` for both)."""

from __future__ import annotations

from collections.abc import Callable

import keras

from kerasboost.architectures.spec import KERAS_HUB_PROJECTIONS

# keras-hub's transformer blocks: the feed-forward layer whose activation is the GELU (a private name,
# kept with the others in spec.py and checked by tests/backends/test_architectures.py).
_FEED_FORWARD = next(attribute for attribute, name in KERAS_HUB_PROJECTIONS.items() if name == "intermediate")


def feed_forward_dense_layers(model) -> list:
    return [
        getattr(layer, _FEED_FORWARD)
        for layer in model._flatten_layers(include_self=False)
        if getattr(layer, _FEED_FORWARD, None) is not None
    ]


def gelu(approximate: bool) -> Callable:
    """keras-hub's tanh-GELU (Hugging Face's `gelu_new`) or the exact one (`gelu`)."""
    from keras_hub.src.utils.keras_utils import gelu_approximate

    return gelu_approximate if approximate else keras.activations.gelu


def feed_forward_activation(backbone) -> Callable:
    return feed_forward_dense_layers(backbone)[0].activation


def use_feed_forward_activation(backbone, activation: Callable) -> None:
    for dense in feed_forward_dense_layers(backbone):
        dense.activation = activation


def layer_norm_epsilon(model) -> float:
    return float(_norms(model)[0].epsilon)


def use_layer_norm_epsilon(model, epsilon: float) -> None:
    for norm in _norms(model):
        norm.epsilon = float(epsilon)


def _norms(model) -> list:
    return [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.LayerNormalization)
    ]
