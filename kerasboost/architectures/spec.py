"""`Architecture`: what one model family tells the rest of kerasboost, as plain values (no ML import)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

# keras-hub's transformer blocks (TransformerEncoder, TransformerDecoder) name their projections with these
# private attributes, on the block or on its `_self_attention_layer`: attribute -> our target name.
KERAS_HUB_PROJECTIONS = {
    "_query_dense": "query",
    "_key_dense": "key",
    "_value_dense": "value",
    "_output_dense": "attention_output",
    "_feedforward_intermediate_dense": "intermediate",
    "_feedforward_output_dense": "output",
}
SELF_ATTENTION_ATTRIBUTE = "_self_attention_layer"

# Megatron-style tensor-parallel layout of a keras-hub transformer block, as (variable path regex, axes):
# heads and feed-forward width split over the mesh's "model" axis (see distribute/layouts.py).
_BLOCK = r"(?:.*/)?transformer_layer_\d+/"
_ATTENTION = _BLOCK + r"self_attention(?:_layer)?/"
KERAS_HUB_TRANSFORMER_LAYOUT: dict[str, tuple] = {
    _ATTENTION + r"(?:query|key|value)/kernel": (None, "model", None),
    _ATTENTION + r"(?:query|key|value)/bias": ("model", None),
    _ATTENTION + r"attention_output/kernel": ("model", None, None),
    _BLOCK + r"feedforward_intermediate_dense/kernel": (None, "model"),
    _BLOCK + r"feedforward_intermediate_dense/bias": ("model",),
    _BLOCK + r"feedforward_output_dense/kernel": ("model", None),
    r"(?:.*/)?token_embedding/embeddings": (None, "model"),
}


@dataclass(frozen=True)
class HuggingFaceNames:
    """How Hugging Face transformers names this architecture's modules (PEFT adapter keys)."""

    # (block index, target name) -> module path below the base model, e.g. "encoder.layer.0.attention.self.query"
    module: Callable[[int, str], str]
    # The base model's attribute in the task classes ("bert" in BertForMaskedLM, "transformer" in GPT2LMHeadModel).
    base_model: str
    # The prefix PEFT writes for the class kerasboost exports (BertModel: none; GPT2LMHeadModel: "transformer.").
    export_prefix: str
    # Targets that share one fused module (GPT-2's c_attn holds query, key and value), in their order there.
    fused: tuple[str, ...] = ()
    # Conv1D modules store weights (in, out): PEFT's fan_in_fan_out.
    fan_in_fan_out: bool = False


@dataclass(frozen=True)
class Architecture:
    name: str
    title: str  # as people write it: BERT, GPT-2
    # keras_hub.models class names.
    backbone_class: str
    tokenizer_class: str
    # The vocabulary kerasboost trains when none is given: WordPiece (vocabulary.txt) or byte-level BPE
    # (vocabulary.json + merges.txt).
    vocabulary: Literal["wordpiece", "byte_bpe"]
    tasks: tuple[str, ...]
    # Whether the backbone takes segment ids.
    segments: bool
    # Where a classifier reads the text: the backbone's pooled output, its first token's vector (an encoder
    # without a pooler), or the last real token (a decoder, whose last position has seen the whole text).
    classifier_pooling: Literal["pooled", "first_token", "last_token"]
    # The tokenizer attributes of the ids a classified text starts (None: nothing) and ends with.
    text_ends: tuple[str | None, str]
    hugging_face: HuggingFaceNames
    # keras-hub layer names in the backbone that run once per sequence, not per token (for the FLOP count).
    per_sequence_layers: tuple[str, ...] = ()
    # A byte-level BPE vocabulary trained here starts with these tokens (ids 0, 1, ...).
    special_tokens: tuple[str, ...] = ()
    # The keys of the backbone's output dict; None where it returns the sequence output alone.
    sequence_output: str | None = None
    pooled_output: str | None = None
    causal_lm_class: str | None = None
    # (backbone, preset directory) -> None: what keras-hub's Hugging Face converter leaves out, put back.
    complete_hugging_face_load: Callable[[object, Path], None] | None = None
    projections: dict[str, str] = field(default_factory=lambda: dict(KERAS_HUB_PROJECTIONS))
    layout: dict[str, tuple] = field(default_factory=lambda: dict(KERAS_HUB_TRANSFORMER_LAYOUT))

    @property
    def targets(self) -> tuple[str, ...]:
        """LoRA target names, in block order."""
        return tuple(self.projections.values())
