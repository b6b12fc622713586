"""The one input pipeline every task shares: a seeded, resumable stream of batches.

Examples live in memory as NumPy arrays (tokenised once). The order of every epoch is a seeded
permutation, and the per-batch transform (masking, ...) gets a seed made of the recipe seed and the
global batch index. So batch `k` is the same whether a run got there in one go or resumed at step `k`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from kerasboost.errors import DataError

# A per-batch transform: (batch of examples, stateless seed) -> (x, y, sample_weight).
BatchTransform = Callable


@dataclass
class Batches:
    """What the loop needs from a task's data: in-memory examples and the per-batch transform."""

    train: dict
    validation: dict
    transform: BatchTransform
    tokens_per_example: int


def example_order(num_examples: int, batch_size: int, seed: int, start_batch: int, num_batches: int) -> np.ndarray:
    """Example indices of batches [start_batch, start_batch + num_batches) as a (num_batches, batch) array.

    Each epoch is a fresh permutation seeded by (seed, epoch); a batch never straddles two epochs.
    """
    per_epoch = num_examples // batch_size
    if per_epoch == 0:
        raise DataError(
            f"train.batch_size: a batch of {batch_size} is larger than the {num_examples} training examples"
        )
    rows = []
    epoch = start_batch // per_epoch
    offset = start_batch - epoch * per_epoch
    while len(rows) < num_batches:
        permutation = np.random.default_rng([seed, epoch]).permutation(num_examples)
        batches = permutation[: per_epoch * batch_size].reshape(per_epoch, batch_size)
        rows.extend(batches[offset:])
        epoch, offset = epoch + 1, 0
    return np.stack(rows[:num_batches]).astype(np.int64)


def training_batches(
    examples: dict[str, np.ndarray],
    transform: BatchTransform,
    batch_size: int,
    seed: int,
    start_batch: int,
    num_batches: int,
    shard: tuple[int, int] = (0, 1),
):
    """tf.data of batches [start_batch, start_batch + num_batches), transformed with per-batch seeds.

    With `shard=(index, count)` this process feeds rows [index * b, (index + 1) * b) of every global batch
    (b = batch_size / count), after the transform, so masks and order match a single-process run.
    """
    num_examples = len(next(iter(examples.values())))
    order = example_order(num_examples, batch_size, seed, start_batch, num_batches)
    table = {name: tf.constant(values) for name, values in examples.items()}
    indices = tf.data.Dataset.from_tensor_slices((np.arange(start_batch, start_batch + num_batches), order))

    def gather(batch_index, rows):
        batch = {name: tf.gather(values, rows) for name, values in table.items()}
        return transform(batch, tf.stack([tf.constant(seed, tf.int64), batch_index]))

    index, count = shard
    rows = batch_size // count

    def own_rows(*batch):
        return tf.nest.map_structure(lambda values: values[index * rows : (index + 1) * rows], batch)

    batches = indices.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if count > 1:
        batches = batches.map(own_rows)
    return batches.prefetch(tf.data.AUTOTUNE)


def evaluation_batches(
    examples: dict[str, np.ndarray],
    transform: BatchTransform,
    batch_size: int,
    seed: int,
    limit: int | None = None,
    multiple_of: int = 1,
):
    """tf.data of fixed validation batches: transformed once (same masks at every evaluation), kept in memory.

    `multiple_of` trims the set to a multiple of that many rows, for engines that split every batch
    evenly over replicas (or processes).
    """
    if len(next(iter(examples.values()))) == 0:
        raise DataError("data.validation_split: the validation set is empty; raise it or give data.validation_source")
    dataset = tf.data.Dataset.from_tensor_slices(examples).batch(batch_size)
    if limit is not None:
        dataset = dataset.take(limit)
    batches = [transform(batch, tf.constant([seed, index], tf.int64)) for index, batch in enumerate(dataset)]
    merged = tf.nest.map_structure(lambda *parts: tf.concat(parts, axis=0), *batches)
    rows = int(tf.nest.flatten(merged)[0].shape[0]) // multiple_of * multiple_of
    if rows == 0:
        raise DataError(
            f"data.validation_split: {multiple_of} validation rows are needed to split over the replicas; "
            "there are fewer"
        )
    merged = tf.nest.map_structure(lambda values: values[:rows], merged)
    return tf.data.Dataset.from_tensor_slices(merged).batch(batch_size)
