"""The shared input pipeline: seeded epoch order and exact resumption at any batch."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from kerasboost.data.pipeline import evaluation_batches, example_order, training_batches
from kerasboost.errors import DataError


def test_each_epoch_is_a_permutation_and_epochs_differ():
    order = example_order(num_examples=10, batch_size=3, seed=0, start_batch=0, num_batches=6)
    first, second = order[:3].ravel(), order[3:].ravel()
    assert len(set(first)) == 9 and len(set(second)) == 9
    assert not np.array_equal(first, second)


def test_resuming_at_a_batch_continues_the_same_stream():
    full = example_order(37, 4, seed=11, start_batch=0, num_batches=40)
    for start in (0, 5, 9, 23):
        assert np.array_equal(example_order(37, 4, seed=11, start_batch=start, num_batches=40 - start), full[start:])


def test_batch_larger_than_data_is_a_data_error():
    with pytest.raises(DataError, match="train.batch_size"):
        example_order(3, 4, 0, 0, 1)


def identity(batch, seed):
    return batch["x"], seed


def test_training_batches_pass_global_batch_seeds():
    examples = {"x": np.arange(20, dtype=np.int32)}
    full = list(training_batches(examples, identity, 4, seed=3, start_batch=0, num_batches=8).as_numpy_iterator())
    tail = list(training_batches(examples, identity, 4, seed=3, start_batch=5, num_batches=3).as_numpy_iterator())
    assert [list(s) for _, s in full] == [[3, i] for i in range(8)]
    for (x_full, s_full), (x_tail, s_tail) in zip(full[5:], tail):
        assert np.array_equal(x_full, x_tail) and np.array_equal(s_full, s_tail)


def test_evaluation_batches_are_fixed_and_seeded_per_batch():
    examples = {"x": np.arange(10, dtype=np.int64)}
    dataset = evaluation_batches(examples, lambda batch, seed: batch["x"] + 100 * seed[1], 4, seed=9)
    once, twice = list(dataset.as_numpy_iterator()), list(dataset.as_numpy_iterator())
    assert [list(x) for x in once] == [[0, 1, 2, 3], [104, 105, 106, 107], [208, 209]]
    assert all(np.array_equal(a, b) for a, b in zip(once, twice))
    assert len(list(evaluation_batches(examples, identity_x, 4, seed=9, limit=2))) == 2
    with pytest.raises(DataError):
        evaluation_batches({"x": np.zeros(0, np.int32)}, identity_x, 4, seed=9)
    assert isinstance(dataset, tf.data.Dataset)


def identity_x(batch, seed):
    return batch["x"]
