"""Megatron-style tensor-parallel layouts for keras-hub's BERT and GPT-2 (keras-hub ships none).

Within each transformer block the work splits over the mesh's `model` axis so that each device holds
a slice of the heads and of the feed-forward width, and activations are gathered only twice per block:

    query/key/value kernels (hidden, heads, head_dim)  split on heads (their output axis)
    attention_output kernel (heads, head_dim, hidden)  split on heads (its input axis)
    feedforward_intermediate kernel (hidden, ffn)      split on ffn (output)
    feedforward_output kernel (ffn, hidden)            split on ffn (input)
    token_embedding (vocabulary, hidden)               split on hidden

Keras matches these keys against variable paths with `re.fullmatch`; each is anchored to `/kernel`,
`/bias` or `/embeddings`, so adapter variables (`.../query/lora_a`) never match and stay replicated.
Everything else (layer norms, position embeddings, heads) is replicated.
"""

from __future__ import annotations

from keras import distribution

MODEL_AXIS = "model"
BATCH_AXIS = "batch"

_BLOCK = r"(?:.*/)?transformer_layer_\d+/"
_ATTENTION = _BLOCK + r"self_attention(?:_layer)?/"

TRANSFORMER_LAYOUT: dict[str, tuple] = {
    _ATTENTION + r"(?:query|key|value)/kernel": (None, MODEL_AXIS, None),
    _ATTENTION + r"(?:query|key|value)/bias": (MODEL_AXIS, None),
    _ATTENTION + r"attention_output/kernel": (MODEL_AXIS, None, None),
    _BLOCK + r"feedforward_intermediate_dense/kernel": (None, MODEL_AXIS),
    _BLOCK + r"feedforward_intermediate_dense/bias": (MODEL_AXIS,),
    _BLOCK + r"feedforward_output_dense/kernel": (MODEL_AXIS, None),
    r"(?:.*/)?token_embedding/embeddings": (None, MODEL_AXIS),
}


def transformer_layout_map(mesh: distribution.DeviceMesh) -> distribution.LayoutMap:
    """The layout map above on `mesh` (axes `batch` x `model`), for BERT and GPT-2 alike."""
    layout_map = distribution.LayoutMap(mesh)
    for pattern, axes in TRANSFORMER_LAYOUT.items():
        layout_map[pattern] = axes
    return layout_map
