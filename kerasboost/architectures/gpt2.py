"""GPT-2 (keras-hub `GPT2Backbone`, byte-level BPE): a decoder without segment ids.

Hugging Face's GPT-2 fuses query, key and value into one Conv1D `c_attn` (weights stored (in, out)).
"""

from kerasboost.architectures.spec import (
    Architecture,
    HuggingFaceCheckpoint,
    HuggingFaceNames,
    Weight,
    dense,
    linear,
    norm,
    same,
)

_MODULES = {
    "query": "attn.c_attn",
    "key": "attn.c_attn",
    "value": "attn.c_attn",
    "attention_output": "attn.c_proj",
    "intermediate": "mlp.c_fc",
    "output": "mlp.c_proj",
}


def _third(index: int):
    """Query, key or value (`index` 0, 1, 2) out of c_attn's fused (in, 3 x hidden) kernel or bias."""

    def split(tensor, shape):
        width = tensor.shape[-1] // 3
        return tensor[..., index * width : (index + 1) * width].reshape(shape)

    return split


def _backbone_config(config: dict) -> dict:
    return {
        "vocabulary_size": config["vocab_size"],
        "num_layers": config["n_layer"],
        "num_heads": config["n_head"],
        "hidden_dim": config["n_embd"],
        # n_inner: null means 4 x n_embd (keras-hub's converter assumes that always).
        "intermediate_dim": config.get("n_inner") or 4 * config["n_embd"],
        "dropout": config.get("resid_pdrop", 0.1),
        "max_sequence_length": config["n_positions"],
    }


def _export_config(config: dict) -> dict:
    return {
        "vocab_size": config["vocabulary_size"],
        "n_layer": config["num_layers"],
        "n_head": config["num_heads"],
        "n_embd": config["hidden_dim"],
        "n_inner": config["intermediate_dim"],
        "resid_pdrop": config["dropout"],
        "embd_pdrop": config["dropout"],
        "attn_pdrop": config["dropout"],
        "n_positions": config["max_sequence_length"],
    }


def _backbone_weights(config: dict) -> list[Weight]:
    weights = [
        Weight("token_embedding/embeddings", ("wte.weight",)),
        Weight("position_embedding/embeddings", ("wpe.weight",)),
    ]
    for block in range(config["n_layer"]):
        ours, theirs = f"transformer_layer_{block}/", f"h.{block}."
        weights += norm(ours + "self_attention_layer_norm", theirs + "ln_1")
        for index, target in enumerate(("query", "key", "value")):
            kernel, bias = f"{ours}self_attention/{target}/kernel", f"{ours}self_attention/{target}/bias"
            weights += [
                Weight(kernel, (theirs + "attn.c_attn.weight",), _third(index), part=index),
                Weight(bias, (theirs + "attn.c_attn.bias",), _third(index), part=index),
            ]
        weights += dense(ours + "self_attention/attention_output", theirs + "attn.c_proj", same, input_dims=2)
        weights += norm(ours + "feedforward_layer_norm", theirs + "ln_2")
        weights += dense(ours + "feedforward_intermediate_dense", theirs + "mlp.c_fc", same)
        weights += dense(ours + "feedforward_output_dense", theirs + "mlp.c_proj", same)
    return [*weights, *norm("layer_norm", "ln_f")]


CHECKPOINT = HuggingFaceCheckpoint(
    model_types=("gpt2",),
    backbone_config=_backbone_config,
    backbone_weights=_backbone_weights,
    export_config=_export_config,
    task_classes={"causal_lm": "GPT2LMHeadModel", "classification": "GPT2ForSequenceClassification"},
    tokenizer_class="GPT2Tokenizer",
    special_tokens={
        "bos_token": "end_token_id",
        "eos_token": "end_token_id",
        "unk_token": "end_token_id",
        "pad_token": "pad_token_id",
    },
    heads={
        "classifier": lambda config: [Weight("classifier/kernel", ("score.weight",), linear)],
    },
    epsilon_key="layer_norm_epsilon",
    activation_key="activation_function",
    activations={"gelu_new": True, "gelu_pytorch_tanh": True, "gelu": False},
)

ARCHITECTURE = Architecture(
    name="gpt2",
    title="GPT-2",
    backbone_class="GPT2Backbone",
    tokenizer_class="GPT2Tokenizer",
    vocabulary="byte_bpe",
    tasks=("causal_lm", "classification"),
    segments=False,
    classifier_pooling="last_token",
    text_ends=(None, "end_token_id"),
    hugging_face=HuggingFaceNames(
        module=lambda block, name: f"h.{block}.{_MODULES[name]}",
        base_model="transformer",
        export_prefix="transformer.",
        fused=("query", "key", "value"),
        fan_in_fan_out=True,
    ),
    causal_lm_class="GPT2CausalLM",
    # keras-hub's GPT-2 tokenizer treats id 0 as padding: a padding token takes it, <|endoftext|> id 1.
    special_tokens=("<|pad|>", "<|endoftext|>"),
    classifier_bias=False,  # as GPT2ForSequenceClassification's `score`
    checkpoint=CHECKPOINT,
)
