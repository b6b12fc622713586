"""task: bert_pretraining — the original BERT objective: MLM + next-sentence prediction."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from kerasboost.architectures import architecture
from kerasboost.data.mlm import max_predictions
from kerasboost.data.prepare import PreparedData
from kerasboost.data.tokenizer import describe_tokenizer
from kerasboost.models.backbone import build_backbone
from kerasboost.models.mlm import build_mlm_model, masked_cross_entropy
from kerasboost.tasks.mlm import mlm_masker
from kerasboost.tasks.task import Task, batches


def build_model(recipe, vocabulary_size: int, labels: list[str] | None = None):
    """The backbone and the masked-LM + next-sentence model on it."""
    backbone = build_backbone(recipe.model, vocabulary_size)
    return backbone, build_mlm_model(backbone, next_sentence=True)


def prepare(recipe, run, data: PreparedData):
    tokenizer = data.tokenizer
    mlm = mlm_masker(recipe, tokenizer)

    def transform(batch, seed, rows=(0, None)):
        inputs, labels, weights = mlm(batch, seed, rows)
        next_sentence = batch["next_sentence"]
        return (
            inputs,
            {"mlm": labels, "nsp": next_sentence},
            {"mlm": weights, "nsp": tf.ones_like(next_sentence, dtype=tf.float32)},
        )

    backbone, model = build_model(recipe, tokenizer.vocabulary_size())
    weights = recipe.loss_weights
    balance = float(np.mean(data.store.split("validation").head()["next_sentence"]))
    summary = [
        data.describe("sentence pairs"),
        f"next-sentence pairs: {balance:.1%} true successors (validation) · "
        f"loss = {weights.mlm:g} * MLM + {weights.nsp:g} * NSP",
        describe_tokenizer(architecture(recipe.model.backbone), tokenizer, run),
    ]
    return Task(
        tokenizer,
        batches(data, transform, recipe.data.sequence_length),
        backbone,
        model,
        loss={
            "mlm": masked_cross_entropy(recipe.train.label_smoothing),
            "nsp": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        },
        metrics={
            "mlm": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            "nsp": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        },
        summary=summary,
        loss_weights={"mlm": weights.mlm, "nsp": weights.nsp},
        perplexity_of="mlm_loss",
        logits_per_token=max_predictions(recipe.data) / recipe.data.sequence_length,
    )
