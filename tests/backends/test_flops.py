"""Model FLOPs per token (MFU's numerator): each weight counts at the positions its layer runs on."""

from __future__ import annotations

from helpers import ROOT, tiny_bert_mlm

from kerasboost.recipe import load_recipe
from kerasboost.train.flops import flops_per_token

LAYERS, HIDDEN, FFN, SEQUENCE, VOCABULARY, SLOTS = 2, 32, 64, 16, 200, 4


def test_bert_mlm_counts_the_pooler_once_per_sequence_and_the_head_at_the_masked_slots():
    model = tiny_bert_mlm(0.0, vocabulary=VOCABULARY, sequence=SEQUENCE)
    backbone = model.get_layer("bert_backbone")
    recipe = load_recipe(ROOT / "recipes" / "mlm.yaml", [f"data.sequence_length={SEQUENCE}", f"data.max_predictions={SLOTS}"])
    attention = 4 * HIDDEN * HIDDEN + 4 * HIDDEN  # query, key, value, output kernels and biases
    feedforward = 2 * HIDDEN * FFN + FFN + HIDDEN
    norms = 2 * 2 * HIDDEN
    per_position = 6 * (LAYERS * (attention + feedforward + norms) + 2 * HIDDEN)  # + the embeddings' layer norm
    pooler = 4 * (HIDDEN * HIDDEN + HIDDEN) / SEQUENCE  # frozen without next-sentence prediction; [CLS] only
    head = 6 * (HIDDEN * HIDDEN + HIDDEN + 2 * HIDDEN + VOCABULARY) * SLOTS / SEQUENCE  # dense, norm, output bias
    vocabulary_projection = 6 * VOCABULARY * HIDDEN * SLOTS / SEQUENCE  # the tied token embedding
    scores_and_values = 12 * LAYERS * SEQUENCE * HIDDEN
    expected = per_position + pooler + head + vocabulary_projection + scores_and_values
    assert flops_per_token(recipe, model, backbone) == expected
