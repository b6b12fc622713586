"""Architectures: everything specific to one model family lives in its module here (bert.py, gpt2.py, roberta.py).

The rest of kerasboost asks `architecture(name)` for what differs (keras-hub classes, tokenizer kind,
segment ids, classifier pooling, which tasks it serves, Hugging Face key names, per-sequence layers) and
never branches on an architecture's name. These modules import no ML library, so the recipe schema can
list the names and check tasks without starting TensorFlow; what needs keras-hub resolves class names
where the objects are built (models/, data/tokenizer.py).
"""

from __future__ import annotations

import importlib

from kerasboost.architectures.spec import Architecture

NAMES = ("bert", "gpt2", "roberta")
DEFAULT = "bert"  # model.backbone when a recipe names none


def architecture(name: str) -> Architecture:
    """The `Architecture` of `model.backbone: <name>`."""
    if name not in NAMES:
        raise KeyError(f"unknown architecture {name!r} (choose from {', '.join(NAMES)})")
    return importlib.import_module(f"{__name__}.{name}").ARCHITECTURE


def architecture_of(backbone) -> Architecture:
    """The `Architecture` of a built keras-hub backbone, by its class."""
    for name in NAMES:
        if type(backbone).__name__ == architecture(name).backbone_class:
            return architecture(name)
    raise KeyError(f"no kerasboost architecture for {type(backbone).__name__}")


def serving(task: str) -> list[str]:
    """The architectures that serve `task`."""
    return [name for name in NAMES if task in architecture(name).tasks]


__all__ = ["DEFAULT", "NAMES", "Architecture", "architecture", "architecture_of", "serving"]
