"""Giving a built model's layers a subclass that computes the same thing faster, in place."""

from __future__ import annotations

import keras


def swap_class(model: keras.Model, plain: type, faster: type) -> int:
    """Every layer inside `model` whose class is exactly `plain` becomes a `faster` (a subclass adding no
    variables or config, so weights, paths and presets are unchanged); returns how many."""
    swapped = 0
    for layer in model._flatten_layers(include_self=False):
        if type(layer) is plain:
            layer.__class__ = faster
            swapped += 1
    return swapped
