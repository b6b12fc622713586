"""WordPiece tokenizers: trained from the training text, loaded from a file, or taken from a preset."""

from __future__ import annotations

from pathlib import Path

import keras_hub
import tensorflow as tf

from kerasboost.recipe import Recipe

RESERVED_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_tokenizer(recipe: Recipe, documents: list[str], vocabulary_file: Path):
    """A keras-hub `BertTokenizer`, whose vocabulary is also written to `vocabulary_file`.

    Order of preference: a vocabulary already in the run directory (so `--resume` tokenises exactly as
    before), the recipe's `data.vocabulary`, the tokenizer of `model.preset`, and last a vocabulary
    trained on `documents`.
    """
    data = recipe.data
    if vocabulary_file.is_file():
        tokenizer = keras_hub.models.BertTokenizer(vocabulary=str(vocabulary_file), lowercase=data.lowercase)
    elif data.vocabulary:
        tokenizer = keras_hub.models.BertTokenizer(vocabulary=data.vocabulary, lowercase=data.lowercase)
    elif recipe.model.preset:
        tokenizer = keras_hub.models.BertTokenizer.from_preset(recipe.model.preset)
    else:
        vocabulary = train_vocabulary(documents, data.vocabulary_size, data.lowercase)
        tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=data.lowercase)
    vocabulary_file.write_text("".join(token + "\n" for token in tokenizer.get_vocabulary()), encoding="utf-8")
    return tokenizer


def train_vocabulary(documents: list[str], size: int, lowercase: bool) -> list[str]:
    """A WordPiece vocabulary of at most `size` tokens learnt from `documents` (keras-hub's trainer)."""
    dataset = tf.data.Dataset.from_tensor_slices(documents).batch(1024)
    return keras_hub.tokenizers.compute_word_piece_vocabulary(
        dataset, size, lowercase=lowercase, reserved_tokens=RESERVED_TOKENS
    )


def tokenize(tokenizer, documents: list[str]) -> list:
    """Token ids of each document as NumPy arrays, tokenised in batches by tf.data."""
    dataset = tf.data.Dataset.from_tensor_slices(documents).batch(1024)
    dataset = dataset.map(tokenizer, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    return list(dataset.as_numpy_iterator())
