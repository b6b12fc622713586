"""RoBERTa (keras-hub `RobertaBackbone`, byte-level BPE): BERT's encoder without segment ids, pooler or
next-sentence prediction; a classifier reads the <s> token. Hugging Face names its modules as BERT does,
under `roberta.` in RobertaForMaskedLM and RobertaForSequenceClassification, the classes it serves."""

from kerasboost.architectures.bert import (
    HUGGING_FACE_MODULES,
    encoder_blocks,
    encoder_config,
    encoder_export_config,
    masked_lm_head,
)
from kerasboost.architectures.spec import Architecture, HuggingFaceCheckpoint, HuggingFaceNames, Weight, dense, norm

# Hugging Face's RoBERTa numbers positions from padding_idx + 1 = 2.
_FIRST_POSITION = 2


def _positions(positions, token_types, shape):
    """Hugging Face's RoBERTa adds a one-row token-type embedding to every token; keras-hub's backbone has
    none (its converter drops it, exact only where it is zero, as in fairseq-converted checkpoints). Added
    to every position row instead, it gives the same sums."""
    return positions[_FIRST_POSITION : _FIRST_POSITION + shape[0]] + token_types[0]


def _positions_out(table) -> dict:
    """The inverse of `_positions`: the padding rows Hugging Face numbers before the first position, and a
    zero token-type row (its sums already hold it)."""
    import numpy as np

    padding = np.zeros((_FIRST_POSITION, table.shape[1]), table.dtype)
    return {
        "embeddings.position_embeddings.weight": np.concatenate([padding, table]),
        "embeddings.token_type_embeddings.weight": np.zeros((1, table.shape[1]), table.dtype),
    }


def _export_config(config: dict) -> dict:
    positions = config["max_sequence_length"] + _FIRST_POSITION
    return {**encoder_export_config(config), "max_position_embeddings": positions, "type_vocab_size": 1}


def _backbone_config(config: dict) -> dict:
    return {**encoder_config(config), "max_sequence_length": config["max_position_embeddings"] - _FIRST_POSITION}


def _backbone_weights(config: dict) -> list[Weight]:
    return [
        Weight("embeddings/token_embedding/embeddings", ("embeddings.word_embeddings.weight",)),
        Weight(
            "embeddings/position_embedding/embeddings",
            ("embeddings.position_embeddings.weight", "embeddings.token_type_embeddings.weight"),
            _positions,
            to_hugging_face=_positions_out,
        ),
        *norm("embeddings_layer_norm", "embeddings.LayerNorm"),
        *encoder_blocks(config["num_hidden_layers"]),
    ]


CHECKPOINT = HuggingFaceCheckpoint(
    model_types=("roberta",),
    backbone_config=_backbone_config,
    backbone_weights=_backbone_weights,
    export_config=_export_config,
    task_classes={"mlm": "RobertaForMaskedLM", "classification": "RobertaForSequenceClassification"},
    tokenizer_class="RobertaTokenizer",
    special_tokens={
        "bos_token": "start_token_id",
        "cls_token": "start_token_id",
        "eos_token": "end_token_id",
        "sep_token": "end_token_id",
        "pad_token": "pad_token_id",
        "mask_token": "mask_token_id",
    },
    heads={
        "masked-LM head": lambda config: masked_lm_head("lm_head", "dense", "layer_norm"),
        # RobertaClassificationHead: dense + tanh on <s>, then the output projection.
        "classifier": lambda config: [
            *dense("classifier/dense", "classifier.dense"),
            *dense("classifier/out_proj", "classifier.out_proj"),
        ],
    },
)


ARCHITECTURE = Architecture(
    name="roberta",
    title="RoBERTa",
    backbone_class="RobertaBackbone",
    tokenizer_class="RobertaTokenizer",
    vocabulary="byte_bpe",
    tasks=("mlm", "classification"),
    segments=False,
    classifier_pooling="first_token",
    text_ends=("start_token_id", "end_token_id"),
    hugging_face=HuggingFaceNames(
        module=lambda block, name: f"encoder.layer.{block}.{HUGGING_FACE_MODULES[name]}",
        base_model="roberta",
        export_prefix="roberta.",
    ),
    # Hugging Face's ids for these (<s> 0, <pad> 1, </s> 2, <unk> 3); keras-hub's tokenizer needs all but <unk>.
    special_tokens=("<s>", "<pad>", "</s>", "<unk>", "<mask>"),
    classifier_hidden_activation="tanh",
    checkpoint=CHECKPOINT,
)
