"""The WordPiece vocabulary is trained once per distinct input and read back from the cache after."""

from __future__ import annotations

import keras_hub
import pytest

from kerasboost.data import tokenizer

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
