"""Masked-language-model examples: packed sequences and seeded dynamic masking (BERT's 15 %, 80/10/10).

keras-hub's `MaskedLMMaskGenerator` draws unseeded random numbers inside tf.data, so runs are not
reproducible and a resumed run would see other masks; masking here uses stateless ops seeded per batch.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def max_predictions(data) -> int:
    """Masked slots per sequence: `data.max_predictions`, else the mask rate's share of the sequence."""
    return data.max_predictions or max(1, round(data.sequence_length * data.mask_rate))


class SequencePacker:
    """Concatenates documents (separated by [SEP]) and cuts them into `[CLS] chunk [SEP]` rows, as a stream.

    Packing wastes no compute on padding; only the last row is padded, and dropped when under half full
    (unless it is the only one). Rows come out as documents go in, so memory stays bounded.
    """

    def __init__(self, sequence_length: int, cls_id: int, sep_id: int, pad_id: int):
        self.length, self.cls_id, self.sep_id, self.pad_id = sequence_length, cls_id, sep_id, pad_id
        self._carry = np.zeros(0, np.int32)
        self._started = False
        self._rows = 0

    def add(self, token_ids: list[np.ndarray]) -> dict[str, np.ndarray]:
        pieces = [self._carry]
        for ids in token_ids:
            if len(ids):
                if self._started:
                    pieces.append(np.array([self.sep_id], np.int32))
                pieces.append(np.asarray(ids, np.int32))
                self._started = True
        stream = np.concatenate(pieces)
        body = self.length - 2
        full = len(stream) // body
        self._carry = stream[full * body :]
        packed = np.empty((full, self.length), np.int32)
        packed[:, 0], packed[:, -1] = self.cls_id, self.sep_id
        packed[:, 1:-1] = stream[: full * body].reshape(full, body)
        self._rows += full
        return {"token_ids": packed}

    def finish(self) -> dict[str, np.ndarray]:
        carry, self._carry = self._carry, np.zeros(0, np.int32)
        if len(carry) == 0 or (self._rows and len(carry) < (self.length - 2) // 2):
            return {"token_ids": np.zeros((0, self.length), np.int32)}
        packed = np.full((1, self.length), self.pad_id, np.int32)
        packed[0, 0], packed[0, 1 : 1 + len(carry)], packed[0, 1 + len(carry)] = self.cls_id, carry, self.sep_id
        self._rows += 1
        return {"token_ids": packed}


def masker(
    vocabulary_size: int,
    mask_id: int,
    pad_id: int,
    special_ids: list[int],
    mask_rate: float,
    max_predictions: int,
    segments: bool = True,
):
    """A batch transform: token ids -> (model inputs, original ids at masked slots, slot weights); the
    inputs hold segment ids for a backbone that takes them (`segments`)."""
    special = tf.constant(sorted({pad_id, *special_ids}), tf.int32)

    def transform(batch, seed, rows=(0, None)):
        token_ids = tf.cast(batch["token_ids"], tf.int32)
        masked_ids, positions, labels, weights = mask_tokens(
            token_ids, seed, special, vocabulary_size, mask_id, mask_rate, max_predictions, rows
        )
        inputs = {
            "token_ids": masked_ids,
            "padding_mask": tf.cast(batch.get("padding_mask", token_ids != pad_id), tf.int32),
            "mask_positions": positions,
        }
        if segments:
            inputs["segment_ids"] = tf.cast(batch.get("segment_ids", tf.zeros_like(token_ids)), tf.int32)
        return inputs, labels, weights

    return transform


def mask_tokens(
    token_ids,
    seed,
    special,
    vocabulary_size: int,
    mask_id: int,
    mask_rate: float,
    max_predictions: int,
    rows: tuple = (0, None),
):
    """Chooses round(rate * maskable tokens) slots per row (at least 1, at most `max_predictions`).

    Returns the corrupted ids (80 % [MASK], 10 % random token, 10 % unchanged), the chosen positions
    padded to `max_predictions`, the original ids there, and float weights that are 0 on padding slots.
    `rows` = (first, global batch size) says which rows of the global batch `token_ids` are: random numbers
    are drawn for the whole global batch and sliced, so a process holding part of it masks as one would.
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
    shape = tf.shape(token_ids)
    first, total = rows

    def uniform(shape_of_rows, key, **kwargs):
        if total is None:
            return tf.random.stateless_uniform(shape_of_rows, key, **kwargs)
        drawn = tf.random.stateless_uniform(tf.concat([[total], shape_of_rows[1:]], 0), key, **kwargs)
        return drawn[first : first + shape_of_rows[0]]

    maskable = tf.logical_not(tf.reduce_any(token_ids[..., None] == special, axis=-1))
    scores = tf.where(maskable, uniform(shape, seeds[0]), -1.0)
    count = tf.reduce_sum(tf.cast(maskable, tf.int32), axis=-1)
    wanted = tf.cast(tf.round(tf.cast(count, tf.float32) * mask_rate), tf.int32)
    wanted = tf.minimum(tf.clip_by_value(wanted, 1, max_predictions), count)
    positions = tf.math.top_k(scores, k=max_predictions).indices
    weights = tf.cast(tf.range(max_predictions)[None, :] < wanted[:, None], tf.float32)
    labels = tf.gather(token_ids, positions, batch_dims=1)

    draw = uniform(tf.shape(positions), seeds[1])
    random_ids = uniform(tf.shape(positions), seeds[2], minval=0, maxval=vocabulary_size, dtype=tf.int32)
    replacement = tf.where(draw < 0.8, mask_id, tf.where(draw < 0.9, random_ids, labels))
    replacement = tf.where(weights > 0, replacement, labels)
    rows = tf.broadcast_to(tf.range(shape[0])[:, None], tf.shape(positions))
    corrupted = tf.tensor_scatter_nd_update(token_ids, tf.stack([rows, positions], axis=-1), replacement)
    return corrupted, positions, labels, weights
