"""`Task`: what every task hands the loop (tokenizer, in-memory examples with a per-batch transform, model,
loss and metrics), and the helpers the task modules share to build one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras

from kerasboost.data.pipeline import Batches
from kerasboost.data.sources import ReadReport
from kerasboost.data.tokenizer import tokenize
from kerasboost.errors import DataError


@dataclass
class Task:
    tokenizer: Any
    batches: Batches
    backbone: keras.Model
    model: keras.Model
    loss: Any
    metrics: Any
    summary: list[str]
    loss_weights: dict | None = None
    # The logged loss whose exp() is the perplexity (None: not a language model).
    perplexity_of: str | None = "loss"
    # Extra validation metrics computed from predictions: (model, validation dataset, log, step) -> dict.
    extra_metrics: Callable | None = None
    # Runs after training, e.g. sample generation: (log, step, run) -> None.
    after_training: Callable | None = None
    # The share of a sequence's positions projected onto the vocabulary (for the FLOP count): the masked
    # slots of a masked LM, every position of a causal LM, none for a classifier.
    logits_per_token: float = 0.0


def packed_splits(tokenizer, train_docs, validation_docs, sequence_length: int, pack: Callable) -> dict[str, dict]:
    """{"train": {"token_ids": rows}, "validation": ...}: each split tokenised, then `pack`ed into rows."""
    examples = {}
    for split, documents in (("train", train_docs), ("validation", validation_docs)):
        packed = pack(tokenize(tokenizer, [doc.text for doc in documents]))
        if len(packed) == 0:
            raise DataError(
                f"data.source: the {split} documents give no sequence of data.sequence_length={sequence_length} tokens"
            )
        examples[split] = {"token_ids": packed}
    return examples


def describe_data(
    report: ReadReport, train_docs, validation_docs, train_rows: int, validation_rows: int, unit: str
) -> str:
    line = (
        f"data: {len(train_docs)} training / {len(validation_docs)} validation documents -> "
        f"{train_rows} / {validation_rows} {unit}"
    )
    return line + (f" ({report.describe()})" if report.skipped else "")
