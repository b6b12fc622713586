"""BERT (keras-hub `BertBackbone`, WordPiece): an encoder with segment ids and a pooled [CLS] vector."""

from kerasboost.architectures.spec import Architecture, HuggingFaceCheckpoint, HuggingFaceNames, Weight, dense, norm

# Hugging Face module names below a block (encoder.layer.N.), by target; RoBERTa's are the same.
HUGGING_FACE_MODULES = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attention_output": "attention.output.dense",
    "intermediate": "intermediate.dense",
    "output": "output.dense",
}


def encoder_blocks(num_layers: int) -> list[Weight]:
    """BERT's (and RoBERTa's) transformer blocks: keras-hub's TransformerEncoder from encoder.layer.N."""
    weights = []
    for block in range(num_layers):
        ours, theirs = f"transformer_layer_{block}/", f"encoder.layer.{block}."
        for target in ("query", "key", "value"):
            weights += dense(ours + f"self_attention_layer/{target}", theirs + HUGGING_FACE_MODULES[target])
        weights += dense(
            ours + "self_attention_layer/attention_output",
            theirs + HUGGING_FACE_MODULES["attention_output"],
            input_dims=2,
        )
        weights += norm(ours + "self_attention_layer_norm", theirs + "attention.output.LayerNorm")
        weights += dense(ours + "feedforward_intermediate_dense", theirs + HUGGING_FACE_MODULES["intermediate"])
        weights += dense(ours + "feedforward_output_dense", theirs + HUGGING_FACE_MODULES["output"])
        weights += norm(ours + "feedforward_layer_norm", theirs + "output.LayerNorm")
    return weights


def masked_lm_head(prefix: str, transform: str, layer_norm: str) -> list[Weight]:
    """keras-hub's MaskedLMHead (its vocabulary projection tied to the token embedding) from BERT's
    `cls.predictions` or RoBERTa's `lm_head`."""
    return [
        *dense("mlm_head/intermediate_dense", f"{prefix}.{transform}"),
        *norm("mlm_head/intermediate_layer_norm", f"{prefix}.{layer_norm}"),
        Weight("mlm_head/output_bias", (f"{prefix}.bias",)),
    ]


def encoder_config(config: dict) -> dict:
    """keras-hub encoder arguments from a BERT-style config.json (RoBERTa's too)."""
    return {
        "vocabulary_size": config["vocab_size"],
        "num_layers": config["num_hidden_layers"],
        "num_heads": config["num_attention_heads"],
        "hidden_dim": config["hidden_size"],
        "intermediate_dim": config["intermediate_size"],
        "dropout": config.get("hidden_dropout_prob", 0.1),
        "max_sequence_length": config["max_position_embeddings"],
    }


def encoder_export_config(config: dict) -> dict:
    """The inverse of `encoder_config`: a keras-hub encoder's get_config() as config.json's sizes."""
    return {
        "vocab_size": config["vocabulary_size"],
        "num_hidden_layers": config["num_layers"],
        "num_attention_heads": config["num_heads"],
        "hidden_size": config["hidden_dim"],
        "intermediate_size": config["intermediate_dim"],
        "hidden_dropout_prob": config["dropout"],
        "attention_probs_dropout_prob": config["dropout"],
        "max_position_embeddings": config["max_sequence_length"],
    }


def _backbone_config(config: dict) -> dict:
    return {**encoder_config(config), "num_segments": config.get("type_vocab_size", 2)}


def _export_config(config: dict) -> dict:
    return {**encoder_export_config(config), "type_vocab_size": config["num_segments"]}


def _backbone_weights(config: dict) -> list[Weight]:
    return [
        Weight("token_embedding/embeddings", ("embeddings.word_embeddings.weight",)),
        Weight("position_embedding/embeddings", ("embeddings.position_embeddings.weight",)),
        Weight("segment_embedding/embeddings", ("embeddings.token_type_embeddings.weight",)),
        *norm("embeddings_layer_norm", "embeddings.LayerNorm"),
        *encoder_blocks(config["num_hidden_layers"]),
        # BertForMaskedLM is saved without its pooler (it has none): then it starts fresh.
        *dense("pooled_dense", "pooler.dense", optional=True),
    ]


CHECKPOINT = HuggingFaceCheckpoint(
    model_types=("bert",),
    backbone_config=_backbone_config,
    backbone_weights=_backbone_weights,
    export_config=_export_config,
    task_classes={
        "mlm": "BertForMaskedLM",
        "bert_pretraining": "BertForPreTraining",
        "classification": "BertForSequenceClassification",
    },
    tokenizer_class="BertTokenizer",
    special_tokens={
        "cls_token": "cls_token_id",
        "sep_token": "sep_token_id",
        "pad_token": "pad_token_id",
        "mask_token": "mask_token_id",
    },
    heads={
        "masked-LM head": lambda config: masked_lm_head("cls.predictions", "transform.dense", "transform.LayerNorm"),
        "next-sentence head": lambda config: dense("nsp_head/logits", "cls.seq_relationship"),
        "classifier": lambda config: dense("classifier", "classifier"),
    },
)

ARCHITECTURE = Architecture(
    name="bert",
    title="BERT",
    backbone_class="BertBackbone",
    tokenizer_class="BertTokenizer",
    vocabulary="wordpiece",
    tasks=("mlm", "bert_pretraining", "classification"),
    segments=True,
    classifier_pooling="pooled",
    text_ends=("cls_token_id", "sep_token_id"),
    hugging_face=HuggingFaceNames(
        module=lambda block, name: f"encoder.layer.{block}.{HUGGING_FACE_MODULES[name]}",
        base_model="bert",
        export_prefix="",
    ),
    per_sequence_layers=("pooled_dense",),
    sequence_output="sequence_output",
    pooled_output="pooled_output",
    checkpoint=CHECKPOINT,
)
