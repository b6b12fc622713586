"""Tokenizers: WordPiece or byte-level BPE, as the architecture says; trained, loaded from files, or from a preset.

Whatever the origin, the vocabulary is written into the run directory, and a run directory's own
vocabulary wins, so `--resume` and `eval` tokenise exactly as training did.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import keras_hub
import tensorflow as tf

from kerasboost.architectures import Architecture, architecture
from kerasboost.data.cache import cached_sequences, cached_text
from kerasboost.errors import InputError
from kerasboost.recipe import DataConfig, ModelConfig
from kerasboost.rundir import RunDir, preset_directory

RESERVED_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_tokenizer(model: ModelConfig, data: DataConfig, documents: list[str], run: RunDir):
    """The tokenizer for `model.backbone`: run directory > data.vocabulary > model.preset > trained."""
    spec = architecture(model.backbone)
    tokenizer_class = getattr(keras_hub.models, spec.tokenizer_class)
    if spec.vocabulary == "byte_bpe":
        return _byte_bpe_tokenizer(tokenizer_class, spec, model, data, documents, run)
    return _word_piece_tokenizer(tokenizer_class, model, data, documents, run)


def _word_piece_tokenizer(tokenizer_class, model: ModelConfig, data: DataConfig, documents: list[str], run: RunDir):
    if run.vocabulary_file.is_file():
        return tokenizer_class(vocabulary=str(run.vocabulary_file), lowercase=data.lowercase)
    if data.vocabulary:
        tokenizer = tokenizer_class(vocabulary=data.vocabulary, lowercase=data.lowercase)
    elif model.preset:
        tokenizer = _from_preset(tokenizer_class, preset_directory(model.preset))
    else:
        vocabulary = train_word_piece(documents, data.vocabulary_size, data.lowercase)
        tokenizer = tokenizer_class(vocabulary=vocabulary, lowercase=data.lowercase)
    run.vocabulary_file.write_text("".join(token + "\n" for token in tokenizer.get_vocabulary()), encoding="utf-8")
    return tokenizer


def _byte_bpe_tokenizer(
    tokenizer_class, spec: Architecture, model: ModelConfig, data: DataConfig, documents: list[str], run: RunDir
):
    if run.bpe_vocabulary_file.is_file():
        return _load_bpe(tokenizer_class, run.bpe_vocabulary_file, run.merges_file)
    if data.vocabulary:
        tokenizer = _load_bpe(tokenizer_class, Path(data.vocabulary), Path(data.merges))
    elif model.preset:
        tokenizer = _from_preset(tokenizer_class, preset_directory(model.preset))
    else:
        vocabulary, merges = train_byte_level_bpe(documents, data.vocabulary_size, spec.special_tokens)
        tokenizer = tokenizer_class(vocabulary=vocabulary, merges=merges)
    run.bpe_vocabulary_file.write_text(json.dumps(tokenizer.vocabulary, ensure_ascii=False), encoding="utf-8")
    run.merges_file.write_text("".join(merge + "\n" for merge in tokenizer.merges), encoding="utf-8")
    return tokenizer


def _from_preset(tokenizer_class, directory: Path):
    """The tokenizer of a keras-hub preset, or of a Hugging Face checkpoint directory: its tokenizer.json
    where it has one (transformers 5's `save_pretrained` writes no vocab.txt, vocab.json or merges.txt,
    the files keras-hub's converter reads), else those files."""
    saved = directory / "tokenizer.json"
    if not saved.is_file() or (directory / "metadata.json").is_file():
        return tokenizer_class.from_preset(str(directory))
    model = json.loads(saved.read_text(encoding="utf-8"))["model"]
    if model["type"] == "WordPiece":
        normalizer = json.loads(saved.read_text(encoding="utf-8")).get("normalizer") or {}
        vocabulary = sorted(model["vocab"], key=model["vocab"].get)
        return tokenizer_class(vocabulary=vocabulary, lowercase=bool(normalizer.get("lowercase", False)))
    if model["type"] == "BPE":
        merges = [merge if isinstance(merge, str) else " ".join(merge) for merge in model["merges"]]
        return tokenizer_class(vocabulary=model["vocab"], merges=merges)
    raise InputError(f"model.preset: {saved}: a {model['type']} tokenizer; kerasboost reads WordPiece and BPE")


def _load_bpe(tokenizer_class, vocabulary: Path, merges: Path):
    lines = [
        line for line in merges.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#version")
    ]
    return tokenizer_class(vocabulary=json.loads(vocabulary.read_text(encoding="utf-8")), merges=lines)


def train_word_piece(documents: list[str], size: int, lowercase: bool) -> list[str]:
    """A WordPiece vocabulary of at most `size` tokens learnt from `documents` (keras-hub's trainer),
    kept in the cache (data/cache.py): training it is most of a small run's start-up."""

    def train() -> str:
        dataset = tf.data.Dataset.from_tensor_slices(documents).batch(1024)
        vocabulary = keras_hub.tokenizers.compute_word_piece_vocabulary(
            dataset, size, lowercase=lowercase, reserved_tokens=RESERVED_TOKENS
        )
        return "".join(token + "\n" for token in vocabulary)

    inputs = ["wordpiece", keras_hub.__version__, str(size), str(lowercase), *RESERVED_TOKENS, "", *documents]
    return cached_text("wordpiece", inputs, train).split("\n")[:-1]


def train_byte_level_bpe(
    documents: list[str], size: int, special_tokens: tuple[str, ...]
) -> tuple[dict[str, int], list[str]]:
    """GPT-2 style byte-level BPE (vocabulary, merges) learnt with Hugging Face `tokenizers`, its ids
    starting with the architecture's `special_tokens`."""
    from tokenizers import ByteLevelBPETokenizer

    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(
        documents, vocab_size=size, min_frequency=2, special_tokens=list(special_tokens), show_progress=False
    )
    with tempfile.TemporaryDirectory() as directory:
        trainer.save_model(directory)
        merges = (Path(directory) / "merges.txt").read_text(encoding="utf-8").splitlines()
    return trainer.get_vocab(), [line for line in merges if line and not line.startswith("#version")]


def describe_tokenizer(spec: Architecture, tokenizer, run: RunDir) -> str:
    """The run's `tokenizer:` line: its kind, size and where its files are."""
    if spec.vocabulary == "byte_bpe":
        files = f"{run.bpe_vocabulary_file}, {run.merges_file}"
        return f"tokenizer: byte-level BPE, {tokenizer.vocabulary_size()} tokens -> {files}"
    return f"tokenizer: WordPiece, {tokenizer.vocabulary_size()} tokens -> {run.vocabulary_file}"


def tokenize(tokenizer, documents: list[str], cache: bool = True) -> list:
    """Token ids of each document as NumPy arrays, tokenised in batches by tf.data; kept in the cache
    (data/cache.py) under the tokenizer's full identity and the documents, so reruns skip tokenising
    (unless `cache` is False: texts seen once, such as predict's)."""

    def encode() -> list:
        dataset = tf.data.Dataset.from_tensor_slices(documents).batch(1024)
        dataset = dataset.map(tokenizer, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
        return list(dataset.as_numpy_iterator())

    if not cache:
        return encode()
    identity = [
        type(tokenizer).__qualname__,
        keras_hub.__version__,
        json.dumps(tokenizer.get_config(), sort_keys=True, default=str),
    ]
    identity += [*tokenizer.get_vocabulary(), "", *(getattr(tokenizer, "merges", None) or []), ""]
    return cached_sequences("tokenized", [*identity, *documents], encode)
