"""Preparing the token store: ids as the exported tokenizer gives them, every task, compressed sources,
mixtures, reuse, and nothing half-written ever used."""

from __future__ import annotations

import gzip
import json

import keras_hub
import numpy as np
import pytest
import tensorflow as tf
import zstandard

from kerasboost.data import prepare as prepare_module
from kerasboost.data.prepare import held_out, prepare_data
from kerasboost.data.sources import read_documents
from kerasboost.data.store import is_store
from kerasboost.data.tokenizer import train_word_piece
from kerasboost.errors import DataError
from kerasboost.export import export_preset
from kerasboost.models.backbone import build_backbone
from kerasboost.recipe import ModelConfig, Recipe
from kerasboost.rundir import RunDir

EDGE_CASES = [
    "Café naïve résumé — Ångström façade über déjà vu",
    "中文字符和日本語のテキスト 한국어 mixed with English words",
    "control\x00chars\x07and\x1b[0mescapes\u200band zero\u200dwidth joiners\ufeff here",
    "non\u00a0breaking\u00a0spaces\u2009thin\u202fnarrow\u3000ideographic",
    "a" * 150 + " supercalifragilisticexpialidocious antidisestablishmentarianism " + "xy" * 70,
    "literal [MASK] tokens [CLS] and [SEP] <|endoftext|> written in the text [PAD] [UNK]",
    "Ünïcödé CAPITALS ß ﬁ ligatures ½ fractions ① circled № numero ™ trade",
    "tabs\tand\r\nwindows line endings\vvertical\fform feed",
]


def corpus(count: int = 300) -> list[str]:
    rng = np.random.default_rng(0)
    words = [
        "the",
        "model",
        "reads",
        "a",
        "stream",
        "of",
        "documents",
        "and",
        "packs",
        "their",
        "tokens",
        "into",
        "rows",
        "of",
        "equal",
        "length",
    ]
    texts = [" ".join(rng.choice(words, size=rng.integers(8, 40))) + "." for _ in range(count)]
    return texts + EDGE_CASES * 3


def recipe(tmp_path, **data) -> Recipe:
    """An MLM recipe on tmp_path/corpus.txt (one document per line), with `data` overrides."""
    settings = {"source": str(tmp_path / "corpus.txt"), "document_split": "line", "vocabulary_size": 300}
    return Recipe.model_validate({"data": {**settings, **data}})


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERASBOOST_CACHE_DIR", str(tmp_path / "cache"))


def write_text(path, texts):
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return path


def unpacked(token_ids: np.ndarray, pad_id: int) -> np.ndarray:
    """The body of packed MLM rows ([CLS] ... [SEP]), concatenated."""
    return np.concatenate([row[row != pad_id][1:-1] for row in token_ids])


@pytest.mark.parametrize("backbone", ["bert", "gpt2"])
def test_stored_ids_are_the_ids_of_the_exported_tokenizer(tmp_path, backbone):
    texts = corpus(200)
    write_text(tmp_path / "corpus.txt", texts)
    task = "mlm" if backbone == "bert" else "causal_lm"
    config = Recipe.model_validate(
        {
            "task": task,
            "model": {"backbone": backbone},
            "data": {
                "source": str(tmp_path / "corpus.txt"),
                "validation_source": str(tmp_path / "corpus.txt"),
                "document_split": "line",
                "vocabulary_size": 400,
            },
        }
    )
    prepared = prepare_data(config, progress=None)
    small = {"num_layers": 1, "num_heads": 2, "hidden_dim": 16, "intermediate_dim": 32}
    model = build_backbone(ModelConfig(backbone=backbone, config=small), prepared.tokenizer.vocabulary_size())
    export_preset(model, prepared.tokenizer, tmp_path / "preset")
    exported = getattr(keras_hub.models, type(prepared.tokenizer).__name__).from_preset(str(tmp_path / "preset"))
    documents = [document.text for document in read_documents([str(tmp_path / "corpus.txt")], config.data)[0]]
    dataset = (
        tf.data.Dataset.from_tensor_slices(documents).batch(64).map(exported)
    )  # as keras-hub's preprocessors run it
    ids = [row for batch in dataset for row in batch.to_list() if row]
    train = prepared.store.split("train").head()["token_ids"].astype(np.int64)
    if backbone == "bert":
        stream = np.concatenate([np.append(row, exported.sep_token_id) for row in ids])[:-1]
        body = unpacked(train, exported.pad_token_id)
    else:
        stream = np.concatenate([np.append(row, exported.end_token_id) for row in ids])
        body = train[:, :-1].reshape(-1)
    assert len(body) > 1000 and np.array_equal(body, stream[: len(body)])
    for text in EDGE_CASES:
        assert tf.reduce_all(exported(text) == prepared.tokenizer(text)), text


def test_the_vocabulary_reaches_the_size_asked_for(tmp_path):
    config = Recipe.model_validate(
        {"data": {"source": "builtin:pydocs", "max_documents": 3000, "vocabulary_size": 4000}}
    )
    prepared = prepare_data(config, progress=None)
    assert prepared.tokenizer.vocabulary_size() == 4000
    assert prepared.tokenizer.get_vocabulary()[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def test_a_trained_vocabulary_is_the_same_on_every_run(monkeypatch):
    monkeypatch.setenv("KERASBOOST_CACHE_DIR", "off")
    texts = corpus()
    first = train_word_piece(lambda: iter(texts), 300, True, [])
    assert all(train_word_piece(lambda: iter(texts), 300, True, []) == first for _ in range(3))


def test_plain_gzip_and_zstd_sources_give_identical_stores(tmp_path):
    texts = corpus()
    data = ("\n".join(texts) + "\n").encode("utf-8")
    (tmp_path / "plain.txt").write_bytes(data)
    (tmp_path / "packed.txt.gz").write_bytes(gzip.compress(data))
    (tmp_path / "packed.txt.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    stores = []
    for name in ("plain.txt", "packed.txt.gz", "packed.txt.zst"):
        prepared = prepare_data(recipe(tmp_path, source=str(tmp_path / name)), progress=None)
        stores.append({split: prepared.store.split(split).head() for split in ("train", "validation")})
    for other in stores[1:]:
        for split in ("train", "validation"):
            assert np.array_equal(other[split]["token_ids"], stores[0][split]["token_ids"])


def test_a_prepared_store_is_reused_and_a_changed_source_prepares_again(tmp_path):
    write_text(tmp_path / "corpus.txt", corpus())
    first = prepare_data(recipe(tmp_path), progress=None)
    again = prepare_data(recipe(tmp_path), progress=None)
    assert not first.stats["reused"] and again.stats["reused"]
    assert again.store.directory == first.store.directory
    write_text(tmp_path / "corpus.txt", corpus()[:-1])
    changed = prepare_data(recipe(tmp_path), progress=None)
    assert not changed.stats["reused"] and changed.store.directory != first.store.directory


def test_an_interrupted_prepare_leaves_nothing_that_is_used(tmp_path, monkeypatch):
    write_text(tmp_path / "corpus.txt", corpus(3000))
    store = tmp_path / "store"
    packer = prepare_module.SequencePacker.add
    calls = []

    def failing(self, token_ids):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return packer(self, token_ids)

    monkeypatch.setattr(prepare_module.SequencePacker, "add", failing)
    monkeypatch.setattr(prepare_module, "BATCH_CHARS", 20_000)
    with pytest.raises(KeyboardInterrupt):
        prepare_data(recipe(tmp_path, store=str(store)), progress=None)
    assert not store.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["cache", "corpus.txt"]
    monkeypatch.setattr(prepare_module.SequencePacker, "add", packer)
    prepared = prepare_data(recipe(tmp_path, store=str(store)), progress=None)
    assert is_store(store) and not prepared.stats["reused"]


def test_a_store_of_another_tokenizer_is_refused(tmp_path):
    write_text(tmp_path / "corpus.txt", corpus())
    prepare_data(recipe(tmp_path, store=str(tmp_path / "store")), progress=None)
    with pytest.raises(DataError, match=r"data.store: .*store.* another tokenizer"):
        prepare_data(recipe(tmp_path, store=str(tmp_path / "store"), vocabulary_size=350), progress=None)


def test_every_task_goes_through_the_store(tmp_path):
    records = [
        {"text": " ".join(corpus(40)[i : i + 3]) + ". Next one. And a third sentence here.", "label": str(i % 3)}
        for i in range(120)
    ]
    (tmp_path / "labelled.jsonl").write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    source = str(tmp_path / "labelled.jsonl")
    shapes = {}
    for task, backbone in (("classification", "bert"), ("bert_pretraining", "bert"), ("causal_lm", "gpt2")):
        config = Recipe.model_validate(
            {
                "task": task,
                "model": {"backbone": backbone},
                "data": {"source": source, "vocabulary_size": 300, "sequence_length": 32, "validation_split": 0.2},
            }
        )
        prepared = prepare_data(config, progress=None)
        shapes[task] = {name: values.shape for name, values in prepared.store.split("train").head().items()}
        if task == "classification":
            assert prepared.labels == ["0", "1", "2"]
            labels = prepared.store.split("train").head()["label"]
            assert set(labels.tolist()) == {0, 1, 2}
    assert set(shapes["classification"]) == {"token_ids", "padding_mask", "label"}
    assert set(shapes["bert_pretraining"]) == {"token_ids", "segment_ids", "padding_mask", "next_sentence"}
    assert shapes["causal_lm"]["token_ids"][1] == 33


def test_a_mixture_keeps_each_source_apart(tmp_path):
    write_text(tmp_path / "a.txt", corpus(200))
    write_text(tmp_path / "b.txt", corpus(100)[::-1])
    config = recipe(tmp_path, source=[{"path": str(tmp_path / "a.txt"), "weight": 0.7}, str(tmp_path / "b.txt")])
    prepared = prepare_data(config, progress=None)
    assert len(prepared.store.split("train").sources) == 2
    assert prepared.weights == (0.7, 1.0)


def test_validation_documents_are_held_out_by_document_deterministically():
    chosen = [held_out(3, 0, index, 0.1) for index in range(20_000)]
    assert abs(np.mean(chosen) - 0.1) < 0.01
    assert chosen == [held_out(3, 0, index, 0.1) for index in range(20_000)]
    assert chosen != [held_out(4, 0, index, 0.1) for index in range(20_000)]


def test_the_tokenizer_files_go_into_the_run_directory(tmp_path):
    write_text(tmp_path / "corpus.txt", corpus())
    run = tmp_path / "run"
    run.mkdir()
    prepared = prepare_data(recipe(tmp_path), progress=None)
    prepared.save_tokenizer(RunDir(run))
    assert (run / "vocabulary.txt").read_text(encoding="utf-8").splitlines() == prepared.tokenizer.get_vocabulary()


def test_a_data_store_directory_holding_other_files_is_refused_and_kept(tmp_path):
    write_text(tmp_path / "corpus.txt", corpus())
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "notes.txt").write_text("precious\n")
    with pytest.raises(DataError, match=r"data.store: .*store exists and is not a kerasboost token store"):
        prepare_data(recipe(tmp_path, store=str(tmp_path / "store")), progress=None)
    assert (tmp_path / "store" / "notes.txt").read_text() == "precious\n"
