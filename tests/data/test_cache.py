"""Vocabularies are trained, and documents tokenised, once per distinct input; read back from the cache after."""

from __future__ import annotations

import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from kerasboost.data import tokenizer
from kerasboost.data.cache import cached_sequences

DOCUMENTS = ["the quick brown fox jumps over the lazy dog", "a lazy dog sleeps all day long"] * 20


@pytest.fixture
def counted_training(monkeypatch, tmp_path):
    monkeypatch.setenv("KERASBOOST_CACHE_DIR", str(tmp_path))
    calls = []
    train = keras_hub.tokenizers.compute_word_piece_vocabulary

    def counting(*args, **kwargs):
        calls.append(args[1])
        return train(*args, **kwargs)

    monkeypatch.setattr(keras_hub.tokenizers, "compute_word_piece_vocabulary", counting)
    return calls


def test_same_inputs_train_once(counted_training, tmp_path):
    first = tokenizer.train_word_piece(DOCUMENTS, 120, lowercase=True)
    again = tokenizer.train_word_piece(DOCUMENTS, 120, lowercase=True)
    assert again == first and first[:5] == tokenizer.RESERVED_TOKENS
    assert counted_training == [120]
    assert len(list((tmp_path / "wordpiece").iterdir())) == 1


def test_other_inputs_train_again(counted_training):
    tokenizer.train_word_piece(DOCUMENTS, 120, lowercase=True)
    tokenizer.train_word_piece(DOCUMENTS, 100, lowercase=True)
    tokenizer.train_word_piece(DOCUMENTS[:-1], 120, lowercase=True)
    assert counted_training == [120, 100, 120]


def test_cache_off_always_trains(counted_training, monkeypatch):
    monkeypatch.setenv("KERASBOOST_CACHE_DIR", "off")
    tokenizer.train_word_piece(DOCUMENTS, 120, lowercase=True)
    tokenizer.train_word_piece(DOCUMENTS, 120, lowercase=True)
    assert counted_training == [120, 120]


@pytest.fixture
def counted_tokenising(monkeypatch, tmp_path):
    monkeypatch.setenv("KERASBOOST_CACHE_DIR", str(tmp_path))
    calls = []
    slices = tf.data.Dataset.from_tensor_slices

    def counting(documents):
        calls.append(len(documents))
        return slices(documents)

    monkeypatch.setattr(tf.data.Dataset, "from_tensor_slices", counting)
    return calls


def test_documents_are_tokenised_once(counted_tokenising, tmp_path):
    vocabulary = tokenizer.train_word_piece(DOCUMENTS, 120, lowercase=True)
    word_piece = keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=True)
    counted_tokenising.clear()
    documents = ["The lazy dog", "", "a quick fox jumps over the lazy dog"]
    first = tokenizer.tokenize(word_piece, documents)
    again = tokenizer.tokenize(word_piece, documents)
    assert counted_tokenising == [3]
    assert [ids.tolist() for ids in again] == [ids.tolist() for ids in first] and len(first[1]) == 0
    assert all(ids.dtype == np.int32 for ids in again) and len(list((tmp_path / "tokenized").iterdir())) == 1
    cased = keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=False)
    tokenizer.tokenize(cased, documents)
    tokenizer.tokenize(word_piece, documents[:2])
    assert counted_tokenising == [3, 3, 2]


def test_a_damaged_entry_is_rebuilt(counted_tokenising, tmp_path):
    word_piece = keras_hub.models.BertTokenizer(vocabulary=tokenizer.RESERVED_TOKENS + ["dog", "lazy"], lowercase=True)
    first = tokenizer.tokenize(word_piece, ["lazy dog"])
    next((tmp_path / "tokenized").iterdir()).write_bytes(b"not an npz")
    assert [ids.tolist() for ids in tokenizer.tokenize(word_piece, ["lazy dog"])] == [ids.tolist() for ids in first]
    assert counted_tokenising == [1, 1]


def test_the_cache_keeps_under_its_size_limit_dropping_the_least_recently_used(monkeypatch, tmp_path):
    monkeypatch.setenv("KERASBOOST_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("KERASBOOST_CACHE_MAX_MB", "1")
    built = []

    def build(value):
        built.append(value)
        return [np.full(75_000, value, np.int32)]  # 300 kB: three entries fit in 1 MiB, four do not

    for value in (0, 1, 2, 0, 3):  # the second 0 is read from the cache and becomes the most recently used
        cached_sequences("test", [str(value)], lambda value=value: build(value))
    assert built == [0, 1, 2, 3]
    kept = {int(np.load(entry)["values"][0]) for entry in (tmp_path / "test").iterdir()}
    assert kept == {0, 2, 3}
