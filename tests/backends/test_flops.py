"""Model FLOPs per token (MFU's numerator): each weight counts at the positions its layer runs on."""

from __future__ import annotations

from helpers import ROOT, tiny_bert_mlm

from kerasboost.data.mlm import max_predictions
from kerasboost.data.pipeline import Batches
from kerasboost.models.classifier import build_classifier
from kerasboost.recipe import load_recipe
from kerasboost.tasks.task import Task
from kerasboost.train.flops import flops_per_token

LAYERS, HIDDEN, FFN, SEQUENCE, VOCABULARY, SLOTS = 2, 32, 64, 16, 200, 4
ATTENTION = 4 * HIDDEN * HIDDEN + 4 * HIDDEN  # query, key, value, output kernels and biases
FEEDFORWARD = 2 * HIDDEN * FFN + FFN + HIDDEN
NORMS = 2 * 2 * HIDDEN
PER_POSITION = 6 * (LAYERS * (ATTENTION + FEEDFORWARD + NORMS) + 2 * HIDDEN)  # + the embeddings' layer norm
SCORES_AND_VALUES = 12 * LAYERS * SEQUENCE * HIDDEN
POOLER = HIDDEN * HIDDEN + HIDDEN


def test_bert_mlm_counts_the_pooler_once_per_sequence_and_the_head_at_the_masked_slots():
    model = tiny_bert_mlm(0.0, vocabulary=VOCABULARY, sequence=SEQUENCE)
    backbone = _backbone(model)
    recipe = load_recipe(
        ROOT / "recipes" / "mlm.yaml", [f"data.sequence_length={SEQUENCE}", f"data.max_predictions={SLOTS}"]
    )
    pooler = 4 * POOLER / SEQUENCE  # frozen without next-sentence prediction; [CLS] only
    head = 6 * (HIDDEN * HIDDEN + HIDDEN + 2 * HIDDEN + VOCABULARY) * SLOTS / SEQUENCE  # dense, norm, output bias
    vocabulary_projection = 6 * VOCABULARY * HIDDEN * SLOTS / SEQUENCE  # the tied token embedding
    expected = PER_POSITION + pooler + head + vocabulary_projection + SCORES_AND_VALUES
    assert max_predictions(recipe.data) == SLOTS
    assert flops_per_token(_task(model, backbone, logits_per_token=SLOTS / SEQUENCE)) == expected


def test_bert_classifier_counts_the_pooler_and_the_head_once_per_sequence_and_no_vocabulary():
    backbone = _backbone(tiny_bert_mlm(0.0, vocabulary=VOCABULARY, sequence=SEQUENCE))
    backbone.get_layer("pooled_dense").trainable = True
    model = build_classifier(backbone, num_classes=3, dropout=0.0)
    expected = PER_POSITION + 6 * (POOLER + HIDDEN * 3 + 3) / SEQUENCE + SCORES_AND_VALUES
    assert flops_per_token(_task(model, backbone, logits_per_token=0.0)) == expected


def _task(model, backbone, logits_per_token: float) -> Task:
    """A task around `model` as the FLOP count reads it: sequences of SEQUENCE tokens."""
    batches = Batches({}, {}, transform=None, tokens_per_example=SEQUENCE)
    return Task(None, batches, backbone, model, None, None, [], logits_per_token=logits_per_token)


def _backbone(model):
    return next(layer for layer in model.layers if type(layer).__name__ == "BertBackbone")
