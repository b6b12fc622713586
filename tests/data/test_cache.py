"""Vocabularies are trained once per distinct input and read back from the cache after; the cache stays
under its size limit."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer

from kerasboost.data import tokenizer
from kerasboost.data.cache import cached_text

DOCUMENTS = ["the quick brown fox jumps over the lazy dog", "a lazy dog sleeps all day long"] * 20


@pytest.fixture
def counted_training(monkeypatch, tmp_path):
    monkeypatch.setenv("KERASBOOST_CACHE_DIR", str(tmp_path))
    calls = []
    train = Tokenizer.train_from_iterator

    def counting(self, iterator, trainer=None, **kwargs):
        calls.append(trainer.vocab_size)
        return train(self, iterator, trainer, **kwargs)

    monkeypatch.setattr(Tokenizer, "train_from_iterator", counting)
    return calls


def train(documents, size):
    return tokenizer.train_word_piece(lambda: iter(documents), size, True, [str(len(documents)), *documents])


def test_same_inputs_train_once(counted_training, tmp_path):
    first = train(DOCUMENTS, 120)
    again = train(DOCUMENTS, 120)
    assert again == first and first[:5] == tokenizer.RESERVED_TOKENS
    assert counted_training == [120]
    assert len(list((tmp_path / "wordpiece").iterdir())) == 1


def test_other_inputs_train_again(counted_training):
    train(DOCUMENTS, 120)
    train(DOCUMENTS, 100)
    train(DOCUMENTS[:-1], 120)
    assert counted_training == [120, 100, 120]


def test_cache_off_always_trains(counted_training, monkeypatch):
    monkeypatch.setenv("KERASBOOST_CACHE_DIR", "off")
    train(DOCUMENTS, 120)
    train(DOCUMENTS, 120)
    assert counted_training == [120, 120]


def test_the_cache_keeps_under_its_size_limit_dropping_the_least_recently_used(monkeypatch, tmp_path):
    monkeypatch.setenv("KERASBOOST_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("KERASBOOST_CACHE_MAX_MB", "1")
    built = []

    def build(value):
        built.append(value)
        return str(value) * 300_000  # 300 kB: three entries fit in 1 MiB, four do not

    for value in (0, 1, 2, 0, 3):  # the second 0 is read from the cache and becomes the most recently used
        cached_text("test", [str(value)], lambda value=value: build(value))
    assert built == [0, 1, 2, 3]
    kept = {entry.read_text()[0] for entry in (tmp_path / "test").iterdir()}
    assert kept == {"0", "2", "3"}
