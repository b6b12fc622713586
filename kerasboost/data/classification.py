"""Classification examples: label names mapped to ids, texts encoded for BERT or GPT-2."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kerasboost.errors import DataError


def label_names(train_labels: list[str], validation_labels: list[str]) -> list[str]:
    """Sorted label names of the training set; a validation label unseen in training is an error."""
    names = sorted(set(train_labels))
    if len(names) < 2:
        raise DataError(f"data.label_field: classification needs at least two labels, found {names}")
    unseen = sorted(set(validation_labels) - set(names))
    if unseen:
        raise DataError(f"data.label_field: validation labels not in the training data: {', '.join(unseen[:5])}")
    return names


def encode_texts(
    token_ids: list[np.ndarray], sequence_length: int, start_id: int | None, end_id: int, pad_id: int
) -> dict[str, np.ndarray]:
    """`[start] tokens [end]` truncated and right-padded; BERT gives [CLS]/[SEP], GPT-2 no start and <eot>."""
    budget = sequence_length - 1 - (start_id is not None)
    rows = np.full((len(token_ids), sequence_length), pad_id, dtype=np.int32)
    for row, ids in enumerate(token_ids):
        body = np.asarray(ids[:budget], dtype=np.int32)
        encoded = np.concatenate([[start_id] if start_id is not None else [], body, [end_id]]).astype(np.int32)
        rows[row, : len(encoded)] = encoded
    lengths = np.array([min(len(ids), budget) + 1 + (start_id is not None) for ids in token_ids])
    padding_mask = (np.arange(sequence_length)[None, :] < lengths[:, None]).astype(np.int32)
    return {"token_ids": rows, "padding_mask": padding_mask}


class TextEncoder:
    """A stream of labelled documents -> encoded rows; `encode_texts` on each batch (no state across them)."""

    def __init__(self, sequence_length: int, start_id: int | None, end_id: int, pad_id: int):
        self.arguments = (sequence_length, start_id, end_id, pad_id)

    def add(self, token_ids: list[np.ndarray]) -> dict[str, np.ndarray]:
        encoded = encode_texts(token_ids, *self.arguments)
        return {
            "token_ids": encoded["token_ids"],
            "padding_mask": encoded["padding_mask"].astype(np.uint8),
        }

    def finish(self) -> dict[str, np.ndarray]:
        return {}


def label_transform(uses_segments: bool):
    """(inputs, label, weight) for a batch of encoded texts; the seed is unused (no random corruption)."""

    def transform(batch, seed, rows=None):
        del seed, rows
        inputs = {"token_ids": batch["token_ids"], "padding_mask": batch["padding_mask"]}
        if uses_segments:
            inputs["segment_ids"] = tf.zeros_like(batch["token_ids"])
        return inputs, batch["label"], tf.ones_like(batch["label"], dtype=tf.float32)

    return transform
