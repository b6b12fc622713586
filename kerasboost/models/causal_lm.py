"""Causal LM: backbone + the token embedding reused as output projection, and text generation through the
architecture's keras-hub CausalLM task (its samplers and cache)."""

from __future__ import annotations

import keras
import keras_hub
import numpy as np

from kerasboost.architectures import architecture_of


def build_causal_lm_model(backbone) -> keras.Model:
    """{token_ids, padding_mask} -> next-token logits (float32) at every position."""
    inputs = {name: keras.Input(shape=(None,), dtype="int32", name=name) for name in ("token_ids", "padding_mask")}
    hidden = backbone(inputs)
    logits = backbone.token_embedding(hidden, reverse=True)
    logits = keras.layers.Activation("linear", dtype="float32", name="logits")(logits)
    return keras.Model(inputs, logits, name="causal_lm")


def generate(
    backbone, tokenizer, prompts: list[str], max_length: int, strategy: str, top_k: int, top_p: float, seed: int
) -> list[tuple[str, int]]:
    """(text, number of tokens) for each prompt continued to `max_length` tokens, prompt included,
    with keras-hub's samplers (seeded); generation does not stop early at <|endoftext|>."""
    samplers = {
        "greedy": lambda: keras_hub.samplers.GreedySampler(),
        "top_k": lambda: keras_hub.samplers.TopKSampler(k=top_k, seed=seed),
        "top_p": lambda: keras_hub.samplers.TopPSampler(p=top_p, seed=seed),
    }
    lm = getattr(keras_hub.models, architecture_of(backbone).causal_lm_class)(backbone=backbone, preprocessor=None)
    lm.compile(sampler=samplers[strategy]())
    token_ids = np.zeros((len(prompts), max_length), dtype="int32")
    padding_mask = np.zeros((len(prompts), max_length), dtype=bool)
    for row, ids in enumerate(tokenizer(prompts)):
        ids = np.asarray(ids)[: max_length - 1]
        token_ids[row, : len(ids)] = ids
        padding_mask[row, : len(ids)] = True
    generated = lm.generate({"token_ids": token_ids, "padding_mask": padding_mask}, stop_token_ids=None)
    results = []
    for ids, mask in zip(
        keras.ops.convert_to_numpy(generated["token_ids"]), keras.ops.convert_to_numpy(generated["padding_mask"])
    ):
        kept = ids[mask.astype(bool)]
        results.append((detokenize(tokenizer, kept), len(kept)))
    return results


def detokenize(tokenizer, ids) -> str:
    """The text of `ids`: keras-hub detokenizes to a TF string tensor (bytes) or a str, by backend."""
    text = tokenizer.detokenize(ids)
    text = text if isinstance(text, (str, bytes)) else np.asarray(text).item()
    return text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text
