"""Megatron-style tensor-parallel layouts for keras-hub's transformer blocks (keras-hub ships none).

Within each transformer block the work splits over the mesh's `model` axis so that each device holds
a slice of the heads and of the feed-forward width, and activations are gathered only twice per block:

    query/key/value kernels (hidden, heads, head_dim)  split on heads (their output axis)
    attention_output kernel (heads, head_dim, hidden)  split on heads (its input axis)
    feedforward_intermediate kernel (hidden, ffn)      split on ffn (output)
    feedforward_output kernel (ffn, hidden)            split on ffn (input)
    token_embedding (vocabulary, hidden)               split on hidden

Each architecture holds its layout as path patterns (architectures/spec.py has keras-hub's block's);
Keras matches them against variable paths with `re.fullmatch`; each is anchored to `/kernel`,
`/bias` or `/embeddings`, so adapter variables (`.../query/lora_a`) never match and stay replicated.
Everything else (layer norms, position embeddings, heads) is replicated.
"""

from __future__ import annotations

from keras import distribution

MODEL_AXIS = "model"
BATCH_AXIS = "batch"


def transformer_layout_map(mesh: distribution.DeviceMesh, layout: dict[str, tuple]) -> distribution.LayoutMap:
    """An architecture's layout (variable path regex -> axes, architectures/spec.py) on `mesh`
    (axes `batch` x `model`)."""
    layout_map = distribution.LayoutMap(mesh)
    for pattern, axes in layout.items():
        layout_map[pattern] = axes
    return layout_map
