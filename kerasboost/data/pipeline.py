"""The one input pipeline every task shares: a seeded, resumable stream of batches read from the token store.

Which rows make global batch `k` is a pure function of (seed, k): sample i of the run is the next row of the
source the mixture assigns to i, and each source walks through a fresh seeded permutation of its rows per
pass. The per-batch transform (masking, ...) gets a seed made of the recipe seed and `k`. So batch `k` is
the same whether a run got there in one go or resumed at step `k`, and each process of a distributed run
reads only its own rows of every global batch.

The mixture interleaves sources like Megatron's blended datasets, deterministically: source s, of
normalised weight w_s, places its j-th sample at time (j + 0.5) / w_s, and the run takes samples in time
order (ties by source). After i samples every source has given i * w_s of them, give or take one or two, and
where sample i comes from is computed from i alone (no table over the whole run, as Megatron builds).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from kerasboost.data.store import StoreSplit
from kerasboost.errors import DataError

# A per-batch transform: (rows of a batch, stateless seed, (first row, global batch size)) -> (x, y, weights).
# The last argument tells a transform that draws random numbers which rows of the global batch it holds.
BatchTransform = Callable


@dataclass
class Batches:
    """What the loop needs from a task's data: the store's splits, the mixture weights and the transform."""

    train: StoreSplit
    validation: StoreSplit
    transform: BatchTransform
    tokens_per_example: int
    weights: tuple[float, ...] = (1.0,)


def _taken_before(time: float, weights: np.ndarray) -> np.ndarray:
    """Per source, how many of its sample times (j + 0.5) / w are <= `time`, exactly as those floats compare."""
    counts = np.maximum(np.floor(time * weights + 0.5).astype(np.int64), 0)
    while True:
        up = (counts + 0.5) / weights <= time
        down = (counts > 0) & ((counts - 0.5) / weights > time)
        if not (up.any() or down.any()):
            return counts
        counts = counts + up - down


def mixture_slots(first: int, count: int, weights) -> tuple[np.ndarray, np.ndarray]:
    """(source, ordinal within that source) of the run's samples [first, first + count)."""
    weights = np.asarray(weights, np.float64) / np.sum(weights)
    if len(weights) == 1:
        return np.zeros(count, np.int64), np.arange(first, first + count, dtype=np.int64)
    start = max(0.0, float(first - len(weights) - 1))
    before = _taken_before(start, weights)
    skip = first - int(before.sum())
    wanted = skip + count
    sources = np.repeat(np.arange(len(weights)), wanted)
    ordinals = (before[:, None] + np.arange(wanted)[None, :]).reshape(-1)
    times = (ordinals + 0.5) / weights[sources]
    order = np.lexsort((sources, times))[skip:wanted]
    return sources[order], ordinals[order]


class RowOrder:
    """Maps a source's sample ordinals to its rows: pass p over the source is permutation (seed, source, p)."""

    def __init__(self, sizes: list[int], seed: int):
        for source, size in enumerate(sizes):
            if size == 0:
                raise DataError(f"data.source: source {source} gives no training examples")
        self.sizes, self.seed = sizes, seed
        self._permutations: dict[tuple[int, int], np.ndarray] = {}

    def rows(self, source: int, ordinals: np.ndarray) -> np.ndarray:
        size = self.sizes[source]
        passes, positions = np.divmod(ordinals, size)
        out = np.empty(len(ordinals), np.int64)
        for epoch in np.unique(passes):
            chosen = passes == epoch
            out[chosen] = self._permutation(source, int(epoch))[positions[chosen]]
        return out

    def _permutation(self, source: int, epoch: int) -> np.ndarray:
        key = (source, epoch)
        if key not in self._permutations:
            if len(self._permutations) > 2 * len(self.sizes):
                self._permutations.clear()
            self._permutations[key] = np.random.default_rng([self.seed, source, epoch]).permutation(self.sizes[source])
        return self._permutations[key]


def batch_rows(split: StoreSplit, order: RowOrder, weights, first: int, count: int) -> dict[str, np.ndarray]:
    """The rows of the run's samples [first, first + count), in memory."""
    sources, ordinals = mixture_slots(first, count, weights)
    parts = {}
    for source in np.unique(sources):
        chosen = np.flatnonzero(sources == source)
        parts[int(source)] = (chosen, split.sources[source].gather(order.rows(int(source), ordinals[chosen])))
    out = {}
    for name in split.field_names:
        sample = next(iter(parts.values()))[1][name]
        values = np.empty((count, *sample.shape[1:]), sample.dtype)
        for chosen, rows in parts.values():
            values[chosen] = rows[name]
        out[name] = values
    return out


def training_batches(
    batches: Batches,
    batch_size: int,
    seed: int,
    start_batch: int,
    num_batches: int,
    shard: tuple[int, int] = (0, 1),
):
    """tf.data of global batches [start_batch, start_batch + num_batches), transformed with per-batch seeds.

    With `shard=(index, count)` this process reads and feeds rows [index * b, (index + 1) * b) of every
    global batch (b = batch_size / count); the transform draws its random numbers for the whole global
    batch, so masks and order match a single-process run.
    """
    split = batches.train
    if split.rows < batch_size and len(split.sources) == 1:
        raise DataError(f"train.batch_size: a batch of {batch_size} is larger than the {split.rows} training examples")
    order = RowOrder([source.rows for source in split.sources], seed)
    index, count = shard
    rows = batch_size // count
    names = split.field_names
    specimen = split.sources[0].gather(np.zeros(1, np.int64))
    dtypes = [tf.as_dtype(_widened(specimen[name].dtype)) for name in names]

    def read(batch_index):
        values = batch_rows(split, order, batches.weights, int(batch_index) * batch_size + index * rows, rows)
        return tuple(values[name].astype(_widened(values[name].dtype)) for name in names)

    def load(batch_index):
        values = tf.numpy_function(read, [batch_index], dtypes, stateful=False)
        batch = {}
        for name, value in zip(names, values):
            value.set_shape((rows, *specimen[name].shape[1:]))
            batch[name] = value
        return batches.transform(
            batch, tf.stack([tf.constant(seed, tf.int64), batch_index]), (index * rows, batch_size)
        )

    dataset = tf.data.Dataset.range(start_batch, start_batch + num_batches)
    return dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)


def _widened(dtype: np.dtype) -> np.dtype:
    """Stored narrow (uint16 ids, uint8 masks), fed as int32: what the models and losses take."""
    return np.dtype(np.int32) if np.issubdtype(dtype, np.integer) else dtype


def evaluation_batches(
    split: StoreSplit,
    transform: BatchTransform,
    batch_size: int,
    seed: int,
    limit: int | None = None,
    multiple_of: int = 1,
):
    """tf.data of fixed validation batches: the first rows of the split (`limit` batches at most), transformed
    once (same masks at every evaluation) and kept in memory.

    `multiple_of` trims the set to a multiple of that many rows, for engines that split every batch
    evenly over replicas (or processes).
    """
    if split.rows == 0:
        raise DataError("data.validation_split: the validation set is empty; raise it or give data.validation_source")
    examples = split.head(None if limit is None else limit * batch_size)
    examples = {name: values.astype(_widened(values.dtype)) for name, values in examples.items()}
    dataset = tf.data.Dataset.from_tensor_slices(examples).batch(batch_size)
    batches = [
        transform(batch, tf.constant([seed, index], tf.int64), (0, int(tf.nest.flatten(batch)[0].shape[0])))
        for index, batch in enumerate(dataset)
    ]
    merged = tf.nest.map_structure(lambda *parts: tf.concat(parts, axis=0), *batches)
    rows = int(tf.nest.flatten(merged)[0].shape[0]) // multiple_of * multiple_of
    if rows == 0:
        raise DataError(
            f"data.validation_split: {multiple_of} validation rows are needed to split over the replicas; "
            "there are fewer"
        )
    merged = tf.nest.map_structure(lambda values: values[:rows], merged)
    return tf.data.Dataset.from_tensor_slices(merged).batch(batch_size)
