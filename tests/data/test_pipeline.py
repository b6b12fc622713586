"""The shared input pipeline over the token store: seeded order, exact resume, per-process shards, mixtures."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from kerasboost.data.mlm import masker
from kerasboost.data.pipeline import Batches, RowOrder, evaluation_batches, mixture_slots, training_batches
from kerasboost.data.store import StoreWriter, TokenStore
from kerasboost.errors import DataError


def make_store(tmp_path, sources: list[np.ndarray], shard_bytes: int = 1000) -> TokenStore:
    """A store whose train source s holds `sources[s]` as token_ids rows; validation: the first source."""
    writer = StoreWriter(tmp_path / "store", shard_bytes=shard_bytes)
    for index, rows in enumerate(sources):
        for part in np.array_split(rows, 10):
            writer.add("train", index, {"token_ids": part})
    writer.add("validation", 0, {"token_ids": sources[0][:10]})
    return TokenStore(writer.commit({"key": "test"}))


def identity(batch, seed, rows=None):
    return batch["token_ids"], tf.broadcast_to(seed[1], [tf.shape(batch["token_ids"])[0]])


def rows_of(count: int, length: int = 6, offset: int = 0) -> np.ndarray:
    """Row i holds offset + i in every position, so a batch says which rows it read."""
    return np.repeat(np.arange(offset, offset + count, dtype=np.int32)[:, None], length, axis=1)


def test_a_mixture_slot_is_a_function_of_its_index_alone():
    weights = (0.7, 0.2, 0.1)
    sources, ordinals = mixture_slots(0, 3000, weights)
    for first, count in ((0, 1), (1, 7), (999, 64), (2000, 1000), (1234, 1)):
        part = mixture_slots(first, count, weights)
        assert np.array_equal(part[0], sources[first : first + count])
        assert np.array_equal(part[1], ordinals[first : first + count])
    for source, weight in enumerate(weights):
        taken = np.cumsum(sources == source)
        assert np.all(np.abs(taken - weight * np.arange(1, 3001)) <= 1.0), "every prefix within one of its share"
        assert np.array_equal(ordinals[sources == source], np.arange(np.sum(sources == source)))


def test_one_source_takes_every_sample_in_turn():
    sources, ordinals = mixture_slots(17, 5, (1.0,))
    assert not sources.any() and ordinals.tolist() == [17, 18, 19, 20, 21]


def test_each_pass_over_a_source_is_a_fresh_permutation():
    order = RowOrder([10], seed=0)
    rows = order.rows(0, np.arange(30))
    passes = rows.reshape(3, 10)
    assert all(sorted(p) == list(range(10)) for p in passes)
    assert not np.array_equal(passes[0], passes[1])
    assert np.array_equal(RowOrder([10], seed=0).rows(0, np.arange(12, 25)), rows[12:25])


def test_resuming_at_a_batch_continues_the_same_stream(tmp_path):
    store = make_store(tmp_path, [rows_of(37)])
    batches = Batches(store.split("train"), store.split("validation"), identity, 6)
    full = list(training_batches(batches, 4, seed=3, start_batch=0, num_batches=12).as_numpy_iterator())
    tail = list(training_batches(batches, 4, seed=3, start_batch=5, num_batches=7).as_numpy_iterator())
    for (x, seeds), (y, tail_seeds) in zip(full[5:], tail):
        assert np.array_equal(x, y) and np.array_equal(seeds, tail_seeds)
    assert [int(seeds[0]) for _, seeds in full] == list(range(12)), "the transform sees the global batch index"
    assert x.dtype == np.int32, "narrow stored ids are fed as int32"


def test_two_processes_read_disjoint_rows_whose_union_is_the_global_batch_with_the_same_masks(tmp_path):
    rng = np.random.default_rng(0)
    tokens = rng.integers(5, 500, size=(64, 16)).astype(np.uint16)
    tokens[:, 0], tokens[:, -1] = 2, 3
    store = make_store(tmp_path, [tokens])
    transform = masker(500, 4, 0, [2, 3], 0.15, 3, segments=False)
    batches = Batches(store.split("train"), store.split("validation"), transform, 16)
    whole = list(training_batches(batches, 8, seed=1, start_batch=2, num_batches=3).as_numpy_iterator())
    halves = [
        list(training_batches(batches, 8, seed=1, start_batch=2, num_batches=3, shard=(i, 2)).as_numpy_iterator())
        for i in range(2)
    ]
    for step, (inputs, labels, weights) in enumerate(whole):
        first, second = halves[0][step], halves[1][step]
        for name in inputs:
            assert np.array_equal(np.concatenate([first[0][name], second[0][name]]), inputs[name])
        assert np.array_equal(np.concatenate([first[1], second[1]]), labels)
        assert np.array_equal(np.concatenate([first[2], second[2]]), weights)
        assert first[0]["token_ids"].shape[0] == 4


def test_a_mixture_feeds_each_source_its_share_deterministically(tmp_path):
    store = make_store(tmp_path, [rows_of(50), rows_of(20, offset=1000), rows_of(30, offset=2000)])
    batches = Batches(store.split("train"), store.split("validation"), identity, 6, weights=(5.0, 3.0, 2.0))
    seen = np.concatenate([x[:, 0] for x, _ in training_batches(batches, 10, 7, 0, 100).as_numpy_iterator()])
    shares = np.bincount(seen // 1000, minlength=3) / len(seen)
    assert np.allclose(shares, (0.5, 0.3, 0.2), atol=0.01)
    again = np.concatenate([x[:, 0] for x, _ in training_batches(batches, 10, 7, 0, 100).as_numpy_iterator()])
    assert np.array_equal(seen, again)
    small = seen[seen // 1000 == 1] - 1000
    assert sorted(small[:20]) == list(range(20)), "a source repeats only after a full pass over its rows"


def test_the_store_is_read_across_shards(tmp_path):
    tokens = rows_of(200)
    store = make_store(tmp_path, [tokens], shard_bytes=500)
    split = store.split("train")
    assert len(split.sources[0].fields["token_ids"]) > 3
    indices = np.array([199, 0, 57, 57, 120])
    assert np.array_equal(split.sources[0].gather(indices)["token_ids"], tokens[indices])


def test_a_batch_larger_than_the_data_is_a_data_error(tmp_path):
    store = make_store(tmp_path, [rows_of(3)])
    with pytest.raises(DataError, match="train.batch_size"):
        training_batches(Batches(store.split("train"), store.split("validation"), identity, 6), 4, 0, 0, 1)


def test_evaluation_batches_are_fixed_and_seeded_per_batch(tmp_path):
    store = make_store(tmp_path, [rows_of(37)])
    validation = store.split("validation")

    def shifted(batch, seed, rows):
        return batch["token_ids"] + 100 * tf.cast(seed[1], tf.int32)

    dataset = evaluation_batches(validation, shifted, 4, seed=9)
    first, second = list(dataset.as_numpy_iterator()), list(dataset.as_numpy_iterator())
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert first[1][0, 0] == 4 + 100
    assert len(list(evaluation_batches(validation, identity, 4, seed=9, limit=2))) == 2


def test_an_interrupted_store_is_never_opened(tmp_path):
    writer = StoreWriter(tmp_path / "store")
    writer.add("train", 0, {"token_ids": rows_of(5)})
    writer.abort()
    assert not (tmp_path / "store").exists() and not list(tmp_path.iterdir())
    with pytest.raises(DataError, match="not a readable kerasboost token store"):
        TokenStore(tmp_path / "store")
