"""task: bert_pretraining — the original BERT objective: MLM + next-sentence prediction."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from kerasboost.architectures import architecture
from kerasboost.data.mlm import max_predictions
from kerasboost.data.nsp import build_pairs, split_segments
from kerasboost.data.pipeline import Batches
from kerasboost.data.tokenizer import build_tokenizer, describe_tokenizer, tokenize
from kerasboost.errors import DataError
from kerasboost.models.backbone import build_backbone
from kerasboost.models.mlm import build_mlm_model, sparse_cross_entropy
from kerasboost.tasks.mlm import mlm_masker
from kerasboost.tasks.task import Task, describe_data


def prepare(recipe, run, train_docs, validation_docs, report):
    data = recipe.data
    tokenizer = build_tokenizer(recipe.model, recipe.data, [doc.text for doc in train_docs], run)
    examples = {}
    for split, documents, seed in (
        ("train", train_docs, recipe.seed),
        ("validation", validation_docs, recipe.seed + 1),
    ):
        segments = [split_segments(doc.text) for doc in documents]
        flat = tokenize(tokenizer, [segment for doc in segments for segment in doc]) if any(segments) else []
        tokenised, start = [], 0
        for doc in segments:
            tokenised.append([ids for ids in flat[start : start + len(doc)] if len(ids)])
            start += len(doc)
        try:
            pairs = build_pairs(
                tokenised,
                data.sequence_length,
                data.next_sentence_rate,
                seed,
                tokenizer.cls_token_id,
                tokenizer.sep_token_id,
                tokenizer.pad_token_id,
            )
        except ValueError as err:
            raise DataError(f"data.source: {split} documents: {err}") from None
        if len(pairs["token_ids"]) == 0:
            raise DataError(f"data.source: no {split} document has two segments to pair for next-sentence prediction")
        examples[split] = pairs
    mlm = mlm_masker(recipe, tokenizer)

    def transform(batch, seed):
        inputs, labels, weights = mlm(batch, seed)
        next_sentence = batch["next_sentence"]
        return (
            inputs,
            {"mlm": labels, "nsp": next_sentence},
            {"mlm": weights, "nsp": tf.ones_like(next_sentence, dtype=tf.float32)},
        )

    backbone = build_backbone(recipe.model, tokenizer.vocabulary_size())
    weights = recipe.loss_weights
    balance = float(np.mean(examples["train"]["next_sentence"]))
    summary = [
        describe_data(
            report,
            train_docs,
            validation_docs,
            len(examples["train"]["token_ids"]),
            len(examples["validation"]["token_ids"]),
            "sentence pairs",
        ),
        f"next-sentence pairs: {balance:.1%} true successors · loss = {weights.mlm:g} * MLM + {weights.nsp:g} * NSP",
        describe_tokenizer(architecture(recipe.model.backbone), tokenizer, run),
    ]
    return Task(
        tokenizer,
        Batches(examples["train"], examples["validation"], transform, data.sequence_length),
        backbone,
        build_mlm_model(backbone, next_sentence=True),
        loss={"mlm": sparse_cross_entropy(), "nsp": keras.losses.SparseCategoricalCrossentropy(from_logits=True)},
        metrics={
            "mlm": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            "nsp": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        },
        summary=summary,
        loss_weights={"mlm": weights.mlm, "nsp": weights.nsp},
        perplexity_of="mlm_loss",
        logits_per_token=max_predictions(data) / data.sequence_length,
    )
