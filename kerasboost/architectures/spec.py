"""`Architecture`: what one model family tells the rest of kerasboost, as plain values (no ML import)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
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
# The blocks' layer norms, by which sublayer they belong to (before it in a pre-LN block such as GPT-2's, after
# it in a post-LN one such as BERT's): sublayer -> keras-hub's private attribute.
KERAS_HUB_BLOCK_NORMS = {"attention": "_self_attention_layer_norm", "feedforward": "_feedforward_layer_norm"}

# Where bottleneck adapters sit in keras-hub's blocks, by `peft.bottleneck.placement`, as target names. Serial
# placements adapt each site's output; "parallel" reads the input of its first site and adds to the output of
# its second (the feed-forward sublayer's two projections, called one right after the other).
KERAS_HUB_BOTTLENECK_SITES = {
    "houlsby": ("attention_output", "output"),
    "pfeiffer": ("output",),
    "parallel": ("intermediate", "output"),
}

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


def linear(weight, shape):
    """A torch `Linear` weight (out, in) as a Keras kernel of `shape` (in first; heads split as keras-hub does)."""
    return weight.T.reshape(shape)


def same(tensor, shape):
    """A tensor stored as Keras stores it (biases, norms, embeddings, GPT-2's Conv1D kernels), reshaped."""
    return tensor.reshape(shape)


@dataclass(frozen=True)
class Weight:
    """One Keras variable (by path) and the Hugging Face tensors it is made from: `transform(*tensors, shape)`
    with NumPy arrays (methods only, so this module imports nothing). Exporting inverts it: a kernel's
    first `input_dims` axes are its input (attention output projections: heads x head size), `part` is
    its place among variables that share one tensor (GPT-2's q, k, v in c_attn, joined on the last axis),
    and `to_hugging_face(value) -> {key: tensor}` replaces all that where the map is not a reshape."""

    path: str
    keys: tuple[str, ...]
    transform: Callable = same
    # A tensor some checkpoints leave out (BERT's pooler after masked-LM training): the variable starts fresh.
    optional: bool = False
    input_dims: int = 1
    part: int | None = None
    to_hugging_face: Callable | None = None


def dense(
    path: str, key: str, transform: Callable = linear, optional: bool = False, input_dims: int = 1
) -> list[Weight]:
    """A keras Dense / EinsumDense kernel and bias from the module `key` (a torch Linear by default;
    `transform=same` for GPT-2's Conv1D, stored (in, out))."""
    return [
        Weight(f"{path}/kernel", (f"{key}.weight",), transform, optional, input_dims),
        Weight(f"{path}/bias", (f"{key}.bias",), optional=optional),
    ]


def norm(path: str, key: str) -> list[Weight]:
    """A keras LayerNormalization from a torch LayerNorm `key`."""
    return [Weight(f"{path}/gamma", (f"{key}.weight",)), Weight(f"{path}/beta", (f"{key}.bias",))]


@dataclass(frozen=True)
class HuggingFaceCheckpoint:
    """How a `save_pretrained` directory of this architecture maps onto keras-hub's backbone and our heads."""

    # config.json's `model_type` values this architecture reads.
    model_types: tuple[str, ...]
    # config.json -> the keras-hub backbone's constructor arguments (vocabulary_size included).
    backbone_config: Callable[[dict], dict]
    # config.json -> the backbone's weights, keys below the base model (`HuggingFaceNames.base_model`).
    backbone_weights: Callable[[dict], list[Weight]]
    # Head name (as printed) -> config.json -> the head's weights, full keys. A head loads when the task's
    # model has its variables and the checkpoint its tensors.
    heads: dict[str, Callable[[dict], list[Weight]]] = field(default_factory=dict)
    # keras-hub backbone config (get_config()) -> config.json's sizes (model_type, ids and task keys are
    # added by the exporter).
    export_config: Callable[[dict], dict] = dict
    # The transformers class that holds each task's model, and transformers' tokenizer class.
    task_classes: dict[str, str] = field(default_factory=dict)
    tokenizer_class: str = ""
    # transformers' special-token names -> the keras-hub tokenizer's id attribute for each.
    special_tokens: dict[str, str] = field(default_factory=dict)
    # config.json's layer-norm epsilon (keras-hub builds each backbone with one fixed value).
    epsilon_key: str = "layer_norm_eps"
    # config.json's feed-forward activation key, and its values by whether the GELU is tanh-approximated.
    activation_key: str = "hidden_act"
    activations: dict[str, bool] = field(
        default_factory=lambda: {"gelu": False, "gelu_new": True, "gelu_pytorch_tanh": True}
    )


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
    # A hidden layer with this activation in the classifier (RoBERTa's head); whether the output has a bias
    # (GPT-2's `score` has none).
    classifier_hidden_activation: str | None = None
    classifier_bias: bool = True
    checkpoint: HuggingFaceCheckpoint | None = None
    projections: dict[str, str] = field(default_factory=lambda: dict(KERAS_HUB_PROJECTIONS))
    layout: dict[str, tuple] = field(default_factory=lambda: dict(KERAS_HUB_TRANSFORMER_LAYOUT))
    bottleneck_sites: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(KERAS_HUB_BOTTLENECK_SITES))

    @property
    def targets(self) -> tuple[str, ...]:
        """LoRA target names, in block order."""
        return tuple(self.projections.values())
