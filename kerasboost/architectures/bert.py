"""BERT (keras-hub `BertBackbone`, WordPiece): an encoder with segment ids and a pooled [CLS] vector."""

from kerasboost.architectures.spec import Architecture, HuggingFaceNames

# Hugging Face module names below a block (encoder.layer.N.), by target; RoBERTa's are the same.
HUGGING_FACE_MODULES = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attention_output": "attention.output.dense",
    "intermediate": "intermediate.dense",
    "output": "output.dense",
}

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
)
