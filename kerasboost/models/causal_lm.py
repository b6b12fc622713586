"""Causal LM: backbone + the token embedding reused as output projection (generation: generation.py)."""

from __future__ import annotations

import keras
import numpy as np


def build_causal_lm_model(backbone) -> keras.Model:
    """{token_ids, padding_mask} -> next-token logits (float32) at every position."""
    inputs = {name: keras.Input(shape=(None,), dtype="int32", name=name) for name in ("token_ids", "padding_mask")}
    hidden = backbone(inputs)
    logits = backbone.token_embedding(hidden, reverse=True)
    logits = keras.layers.Activation("linear", dtype="float32", name="logits")(logits)
    return keras.Model(inputs, logits, name="causal_lm")


def detokenize(tokenizer, ids) -> str:
    """The text of `ids`: keras-hub detokenizes to a TF string tensor (bytes) or a str, by backend."""
    text = tokenizer.detokenize(ids)
    text = text if isinstance(text, (str, bytes)) else np.asarray(text).item()
    return text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text
