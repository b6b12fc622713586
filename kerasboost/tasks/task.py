"""`Task`: what every task hands the loop (tokenizer, the token store's splits with a per-batch transform,
model, loss and metrics), and the helper the task modules share to build one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras

from kerasboost.data.pipeline import Batches
from kerasboost.data.prepare import PreparedData


@dataclass
class Task:
    tokenizer: Any
    batches: Batches | None  # None: a trained model loaded to be used (predict, export), not trained or evaluated
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


def batches(data: PreparedData, transform, tokens_per_example: int) -> Batches:
    """The store's splits as the loop reads them."""
    return Batches(
        data.store.split("train"), data.store.split("validation"), transform, tokens_per_example, data.weights
    )
