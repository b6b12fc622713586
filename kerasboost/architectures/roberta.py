"""RoBERTa (keras-hub `RobertaBackbone`, byte-level BPE): BERT's encoder without segment ids, pooler or
next-sentence prediction; a classifier reads the <s> token. Hugging Face names its modules as BERT does,
under `roberta.` in RobertaForMaskedLM and RobertaForSequenceClassification, the classes it serves."""

from pathlib import Path

from kerasboost.architectures.bert import HUGGING_FACE_MODULES
from kerasboost.architectures.spec import Architecture, HuggingFaceNames


def fold_token_type_embedding(backbone, preset: Path) -> None:
    """Hugging Face's RoBERTa adds a one-row token-type embedding to every token; keras-hub's converter drops
    it (exact only where it is zero, as in fairseq-converted checkpoints). Added to every position
    embedding row instead, it gives the same sums."""
    from safetensors import safe_open

    for file in sorted(preset.glob("*.safetensors")):  # a keras-hub preset holds none
        with safe_open(str(file), framework="np") as tensors:
            for key in tensors.keys():  # noqa: SIM118  (a safetensors handle is not a dict)
                if key.endswith("embeddings.token_type_embeddings.weight"):
                    table = backbone.embeddings.position_embedding.position_embeddings
                    table.assign(table + tensors.get_tensor(key)[0])


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
    complete_hugging_face_load=fold_token_type_embedding,
)
