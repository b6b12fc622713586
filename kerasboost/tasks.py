"""Tasks: what a recipe's `task:` builds from documents and puts on top of the backbone.

Every task produces the same three things (tokenizer, `Batches`, compiled-ready model with its loss
and metrics), so data loading and the training loop are shared and never copied per task.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

from kerasboost.data.mlm import masker, pack_sequences
from kerasboost.data.sources import ReadReport
from kerasboost.data.tokenizer import build_tokenizer, tokenize
from kerasboost.errors import DataError
from kerasboost.models.backbone import build_backbone
from kerasboost.models.mlm import build_mlm_model, mlm_loss_and_metrics
from kerasboost.recipe import Recipe
from kerasboost.rundir import RunDir
from kerasboost.train.loop import Batches


@dataclass
class Task:
    tokenizer: object
    batches: Batches
    backbone: keras.Model
    model: keras.Model
    loss: keras.losses.Loss
    metrics: list
    summary: list[str]


def prepare_task(recipe: Recipe, run: RunDir, train_docs: list[str], validation_docs: list[str], report: ReadReport) -> Task:
    """Tokenises the documents and builds the model; only `mlm` exists so far."""
    tokenizer = build_tokenizer(recipe, train_docs, run.vocabulary_file)
    data = recipe.data
    examples = {}
    for split, documents in (("train", train_docs), ("validation", validation_docs)):
        packed = pack_sequences(tokenize(tokenizer, documents), data.sequence_length, tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id)
        if len(packed) == 0:
            raise DataError(f"data.source: the {split} documents give no sequence of data.sequence_length={data.sequence_length} tokens")
        examples[split] = {"token_ids": packed}
    max_predictions = data.max_predictions or max(1, round(data.sequence_length * data.mask_rate))
    transform = masker(tokenizer.vocabulary_size(), tokenizer.mask_token_id, tokenizer.pad_token_id, tokenizer.special_token_ids, data.mask_rate, max_predictions)
    backbone = build_backbone(recipe.model, tokenizer.vocabulary_size())
    model = build_mlm_model(backbone)
    loss, metrics = mlm_loss_and_metrics()
    summary = [
        f"data: {len(train_docs)} training / {len(validation_docs)} validation documents -> "
        f"{len(examples['train']['token_ids'])} / {len(examples['validation']['token_ids'])} sequences of {data.sequence_length} tokens"
        + (f" ({report.describe()})" if report.skipped else ""),
        f"tokenizer: WordPiece, {tokenizer.vocabulary_size()} tokens -> {run.vocabulary_file}",
    ]
    batches = Batches(train=examples["train"], validation=examples["validation"], transform=transform, tokens_per_example=data.sequence_length)
    return Task(tokenizer, batches, backbone, model, loss, metrics, summary)
