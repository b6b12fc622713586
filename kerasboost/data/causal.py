"""Causal-LM examples: documents packed end to end with end-of-text separators, no padding."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


class CausalPacker:
    """Rows of `sequence_length + 1` tokens cut from `doc <eot> doc <eot> ...`, as a stream; inputs and targets
    are the row shifted by one, so consecutive rows overlap by one token and every token is predicted once.
    The tail shorter than a row is dropped."""

    def __init__(self, sequence_length: int, end_id: int):
        self.length, self.end_id = sequence_length, end_id
        self._carry = np.zeros(0, np.int32)

    def add(self, token_ids: list[np.ndarray]) -> dict[str, np.ndarray]:
        pieces = [self._carry]
        for ids in token_ids:
            if len(ids):
                pieces.extend([np.asarray(ids, np.int32), np.array([self.end_id], np.int32)])
        stream = np.concatenate(pieces)
        rows = max(len(stream) - 1, 0) // self.length
        self._carry = stream[rows * self.length :]
        if rows == 0:
            return {"token_ids": np.zeros((0, self.length + 1), np.int32)}
        windows = np.lib.stride_tricks.sliding_window_view(stream, self.length + 1)[:: self.length][:rows]
        return {"token_ids": windows.copy()}

    def finish(self) -> dict[str, np.ndarray]:
        self._carry = np.zeros(0, np.int32)
        return {"token_ids": np.zeros((0, self.length + 1), np.int32)}


def next_token_transform(batch, seed, rows=None):
    """(inputs, next tokens, weights): packed rows have no padding, so every position counts."""
    del seed, rows  # nothing random: the order of rows is the only seeded part
    ids = tf.cast(batch["token_ids"], tf.int32)
    inputs = {"token_ids": ids[:, :-1], "padding_mask": tf.ones_like(ids[:, :-1])}
    targets = ids[:, 1:]
    return inputs, targets, tf.ones_like(targets, dtype=tf.float32)
