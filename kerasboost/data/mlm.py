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


def pack_sequences(
    token_ids: list[np.ndarray], sequence_length: int, cls_id: int, sep_id: int, pad_id: int
) -> np.ndarray:
    """Concatenates documents (separated by [SEP]) and cuts them into `[CLS] chunk [SEP]` rows.

    Packing wastes no compute on padding; only the last row is padded, and dropped when under half full
    (unless it is the only one).
    """
    body = sequence_length - 2
    pieces = []
    for ids in token_ids:
        if len(ids):
            pieces.extend([np.asarray(ids, dtype=np.int32), np.array([sep_id], dtype=np.int32)])
    stream = np.concatenate(pieces[:-1]) if pieces else np.zeros(0, np.int32)
    chunks = [stream[start : start + body] for start in range(0, len(stream), body)]
    if len(chunks) > 1 and len(chunks[-1]) < body // 2:
        chunks.pop()
    packed = np.full((len(chunks), sequence_length), pad_id, dtype=np.int32)
    for row, chunk in enumerate(chunks):
        packed[row, 0] = cls_id
        packed[row, 1 : 1 + len(chunk)] = chunk
        packed[row, 1 + len(chunk)] = sep_id
    return packed


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

    def transform(batch, seed):
        token_ids = tf.cast(batch["token_ids"], tf.int32)
        masked_ids, positions, labels, weights = mask_tokens(
            token_ids, seed, special, vocabulary_size, mask_id, mask_rate, max_predictions
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


def mask_tokens(token_ids, seed, special, vocabulary_size: int, mask_id: int, mask_rate: float, max_predictions: int):
    """Chooses round(rate * maskable tokens) slots per row (at least 1, at most `max_predictions`).

    Returns the corrupted ids (80 % [MASK], 10 % random token, 10 % unchanged), the chosen positions
    padded to `max_predictions`, the original ids there, and float weights that are 0 on padding slots.
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
    shape = tf.shape(token_ids)
    maskable = tf.logical_not(tf.reduce_any(token_ids[..., None] == special, axis=-1))
    scores = tf.where(maskable, tf.random.stateless_uniform(shape, seeds[0]), -1.0)
    count = tf.reduce_sum(tf.cast(maskable, tf.int32), axis=-1)
    wanted = tf.cast(tf.round(tf.cast(count, tf.float32) * mask_rate), tf.int32)
    wanted = tf.minimum(tf.clip_by_value(wanted, 1, max_predictions), count)
    positions = tf.math.top_k(scores, k=max_predictions).indices
    weights = tf.cast(tf.range(max_predictions)[None, :] < wanted[:, None], tf.float32)
    labels = tf.gather(token_ids, positions, batch_dims=1)

    draw = tf.random.stateless_uniform(tf.shape(positions), seeds[1])
    random_ids = tf.random.stateless_uniform(
        tf.shape(positions), seeds[2], minval=0, maxval=vocabulary_size, dtype=tf.int32
    )
    replacement = tf.where(draw < 0.8, mask_id, tf.where(draw < 0.9, random_ids, labels))
    replacement = tf.where(weights > 0, replacement, labels)
    rows = tf.broadcast_to(tf.range(shape[0])[:, None], tf.shape(positions))
    corrupted = tf.tensor_scatter_nd_update(token_ids, tf.stack([rows, positions], axis=-1), replacement)
    return corrupted, positions, labels, weights
