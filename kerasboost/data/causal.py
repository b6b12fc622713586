"""Causal-LM examples: documents packed end to end with end-of-text separators, no padding."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def pack_causal(token_ids: list[np.ndarray], sequence_length: int, end_id: int) -> np.ndarray:
    """Rows of `sequence_length + 1` tokens cut from `doc <eot> doc <eot> ...`; inputs and targets are the
    row shifted by one, so consecutive rows overlap by one token and every token is predicted once."""
    pieces = [np.append(np.asarray(ids, dtype=np.int32), end_id) for ids in token_ids if len(ids)]
    stream = np.concatenate(pieces) if pieces else np.zeros(0, np.int32)
    rows = max(len(stream) - 1, 0) // sequence_length
    packed = np.zeros((rows, sequence_length + 1), np.int32)
    for row in range(rows):
        packed[row] = stream[row * sequence_length : (row + 1) * sequence_length + 1]
    return packed


def next_token_transform(batch, seed):
    """(inputs, next tokens, weights): packed rows have no padding, so every position counts."""
    del seed  # nothing random: the order of rows is the only seeded part
    ids = tf.cast(batch["token_ids"], tf.int32)
    inputs = {"token_ids": ids[:, :-1], "padding_mask": tf.ones_like(ids[:, :-1])}
    targets = ids[:, 1:]
    return inputs, targets, tf.ones_like(targets, dtype=tf.float32)
