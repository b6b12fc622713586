"""Tokenizers: WordPiece or byte-level BPE, as the architecture says; trained, loaded from files, or from a preset.

Whatever the origin, the vocabulary is written into the run directory, and a run directory's own
vocabulary wins, so `--resume` and `eval` tokenise exactly as training did.
"""

from __future__ import annotations

import collections
import itertools
import json
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import keras_hub
import numpy as np
import tensorflow as tf

from kerasboost.architectures import Architecture, architecture
from kerasboost.data.cache import cached_text
from kerasboost.errors import InputError
from kerasboost.recipe import DataConfig, ModelConfig
from kerasboost.rundir import RunDir, preset_directory

RESERVED_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
ALPHABET_SAMPLE_CHARS = 64 * 2**20  # text whose characters are counted before WordPiece training
ALPHABET = 1000  # WordPiece keeps the most frequent characters only, as BERT's trainer does (limit_alphabet),
# at most an eighth of the vocabulary


def build_tokenizer(
    model: ModelConfig,
    data: DataConfig,
    run: RunDir,
    training_texts: Callable[[], Iterable[str]] | None = None,
    identity: list[str] | None = None,
    trained: RunDir | None = None,
):
    """The tokenizer for `model.backbone`: run directory > data.vocabulary > model.preset > `trained` (the
    files of a store whose vocabulary was trained on the same inputs) > trained now on `training_texts()`
    (kept in the cache under `identity`, the inputs' fingerprint; both are needed only when no vocabulary is
    given). Its files are written into `run`."""
    spec = architecture(model.backbone)
    tokenizer_class = getattr(keras_hub.models, spec.tokenizer_class)
    if spec.vocabulary == "byte_bpe":
        tokenizer = _byte_bpe_tokenizer(tokenizer_class, spec, model, data, run, training_texts, identity, trained)
        run.bpe_vocabulary_file.write_text(json.dumps(tokenizer.vocabulary, ensure_ascii=False), encoding="utf-8")
        run.merges_file.write_text("".join(merge + "\n" for merge in tokenizer.merges), encoding="utf-8")
    else:
        tokenizer = _word_piece_tokenizer(tokenizer_class, model, data, run, training_texts, identity, trained)
        vocabulary = "".join(token + "\n" for token in tokenizer.get_vocabulary())
        run.vocabulary_file.write_text(vocabulary, encoding="utf-8")
    return tokenizer


def _word_piece_tokenizer(tokenizer_class, model, data, run, training_texts, identity, trained):
    for directory in (run, trained):
        if directory is not None and directory.vocabulary_file.is_file():
            return tokenizer_class(vocabulary=str(directory.vocabulary_file), lowercase=data.lowercase)
    if data.vocabulary:
        return tokenizer_class(vocabulary=data.vocabulary, lowercase=data.lowercase)
    if model.preset:
        return _from_preset(tokenizer_class, preset_directory(model.preset))
    vocabulary = train_word_piece(training_texts, data.vocabulary_size, data.lowercase, identity)
    return tokenizer_class(vocabulary=vocabulary, lowercase=data.lowercase)


def _byte_bpe_tokenizer(tokenizer_class, spec: Architecture, model, data, run, training_texts, identity, trained):
    for directory in (run, trained):
        if directory is not None and directory.bpe_vocabulary_file.is_file():
            return _load_bpe(tokenizer_class, directory.bpe_vocabulary_file, directory.merges_file)
    if data.vocabulary:
        return _load_bpe(tokenizer_class, Path(data.vocabulary), Path(data.merges))
    if model.preset:
        return _from_preset(tokenizer_class, preset_directory(model.preset))
    vocabulary, merges = train_byte_level_bpe(training_texts, data.vocabulary_size, spec.special_tokens, identity)
    return tokenizer_class(vocabulary=vocabulary, merges=merges)


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


def train_word_piece(texts: Callable[[], Iterable[str]], size: int, lowercase: bool, identity: list[str]) -> list[str]:
    """A WordPiece vocabulary of `size` tokens learnt by Hugging Face `tokenizers`' trainer (keras-hub's
    Python one is slow on large corpora and stops short of the size asked for), reserved tokens first.
    Words are split as keras-hub's WordPieceTokenizer splits them (whitespace, punctuation, CJK characters;
    NFKC case folding when lowercasing, accents kept), so the vocabulary fits the tokenizer that uses it."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    def train() -> str:
        learner = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        steps = [normalizers.NFKC(), normalizers.Lowercase()] if lowercase else []
        bert = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False
        )
        learner.normalizer = normalizers.Sequence([*steps, bert])
        learner.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        stream = iter(texts())
        sample, chars = [], 0
        for text in stream:
            sample.append(text)
            chars += len(text)
            if chars >= ALPHABET_SAMPLE_CHARS:
                break
        # The trainer numbers the "##c" pieces, and the characters it keeps when some are equally frequent,
        # in hash-map order, different on every call, and breaks ties between equally frequent merges by
        # those numbers. Choosing the alphabet here (the most frequent characters of the sample, which is all
        # of the text up to data.vocabulary_sample_mb) and naming its pieces first fixes the numbers; sorting
        # the learnt tokens fixes the ids: the same text gives the same vocabulary on every run.
        raw = collections.Counter()
        for text in sample:
            raw.update(text)
        counts = collections.Counter()  # normalised one distinct character at a time: a pass over the text is
        for character, count in raw.items():  # Counter's C loop, where normalising it all took as long again
            for normalized in learner.normalizer.normalize_str(character):
                counts[normalized] += count
        alphabet = min(ALPHABET, size // 8)  # a small vocabulary keeps room for whole words
        characters = sorted([c for c, _ in counts.most_common() if not c.isspace()][:alphabet])
        trainer = trainers.WordPieceTrainer(
            vocab_size=size,
            special_tokens=[*RESERVED_TOKENS, *(f"##{c}" for c in characters)],
            initial_alphabet=characters,  # with the limit at their number: exactly these are kept
            limit_alphabet=len(characters),
            continuing_subword_prefix="##",
            show_progress=False,
        )
        learner.train_from_iterator(itertools.chain(sample, stream), trainer)
        learnt = sorted(set(learner.get_vocab()) - set(RESERVED_TOKENS))
        return "".join(token + "\n" for token in [*RESERVED_TOKENS, *learnt])

    inputs = ["hf-wordpiece", "alphabet-4", tokenizers_version(), str(size), str(lowercase), *RESERVED_TOKENS, ""]
    inputs += identity
    return cached_text("wordpiece", inputs, train).split("\n")[:-1]


def train_byte_level_bpe(
    texts: Callable[[], Iterable[str]], size: int, special_tokens: tuple[str, ...], identity: list[str]
) -> tuple[dict[str, int], list[str]]:
    """GPT-2 style byte-level BPE (vocabulary, merges) learnt with Hugging Face `tokenizers`, its ids
    starting with the architecture's `special_tokens`; kept in the cache under `identity`."""
    from tokenizers import ByteLevelBPETokenizer

    def train() -> str:
        trainer = ByteLevelBPETokenizer()
        trainer.train_from_iterator(
            texts(), vocab_size=size, min_frequency=2, special_tokens=list(special_tokens), show_progress=False
        )
        with tempfile.TemporaryDirectory() as directory:
            trainer.save_model(directory)
            merges = (Path(directory) / "merges.txt").read_text(encoding="utf-8").splitlines()
        merges = [line for line in merges if line and not line.startswith("#version")]
        return json.dumps({"vocabulary": trainer.get_vocab(), "merges": merges}, ensure_ascii=False)

    inputs = ["byte-bpe", tokenizers_version(), str(size), *special_tokens, "", *identity]
    trained = json.loads(cached_text("byte_bpe", inputs, train))
    return trained["vocabulary"], trained["merges"]


def tokenizers_version() -> str:
    import tokenizers

    return tokenizers.__version__


def describe_tokenizer(spec: Architecture, tokenizer, run: RunDir) -> str:
    """The run's `tokenizer:` line: its kind, size and where its files are."""
    if spec.vocabulary == "byte_bpe":
        files = f"{run.bpe_vocabulary_file}, {run.merges_file}"
        return f"tokenizer: byte-level BPE, {tokenizer.vocabulary_size()} tokens -> {files}"
    return f"tokenizer: WordPiece, {tokenizer.vocabulary_size()} tokens -> {run.vocabulary_file}"


def tokenizer_identity(tokenizer) -> list[str]:
    """Everything the ids a tokenizer gives depend on: its class, keras-hub's version, config and files."""
    identity = [
        type(tokenizer).__qualname__,
        keras_hub.__version__,
        json.dumps({k: v for k, v in tokenizer.get_config().items() if k != "name"}, sort_keys=True, default=str),
    ]
    return identity + [*tokenizer.get_vocabulary(), "", *(getattr(tokenizer, "merges", None) or []), ""]


def tokenize(tokenizer, documents: list[str]) -> list[np.ndarray]:
    """Token ids of each of a few documents (predict's texts), by the same tf.data path as the store's."""
    return [ids for batch in tokenize_stream(tokenizer, iter([documents])) for ids in batch]


def tokenize_stream(tokenizer, batches: Iterator[list[str]], workers: int | None = None) -> Iterator[list[np.ndarray]]:
    """Token ids of every text of each batch of `batches`, batch by batch, in order.

    The tokenizer is the keras-hub one that a run exports, run inside tf.data (its TensorFlow path, as
    keras-hub's preprocessors run it there), so the ids stored are the ids the exported preset gives; the
    batches are tokenised `workers` at a time (default: one per core) while the next ones are read.
    """
    dataset = tf.data.Dataset.from_generator(lambda: batches, output_signature=tf.TensorSpec([None], tf.string))

    def encode(texts):
        ids = tokenizer(texts)
        return ids.flat_values, ids.row_lengths()

    dataset = dataset.map(encode, num_parallel_calls=workers or tf.data.AUTOTUNE, deterministic=True)
    for values, lengths in dataset.prefetch(2).as_numpy_iterator():
        yield np.split(values, np.cumsum(lengths)[:-1]) if len(lengths) else []
