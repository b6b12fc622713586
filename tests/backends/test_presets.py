"""Backbones and tokenizers from local directories: a Hugging Face checkpoint and a keras-hub preset."""

from __future__ import annotations

import json

import keras
import keras_hub
import numpy as np
import pytest

from kerasboost.data.tokenizer import build_tokenizer
from kerasboost.errors import InputError
from kerasboost.models.backbone import build_backbone
from kerasboost.recipe import ModelConfig, Recipe
from kerasboost.rundir import RunDir

WORDS = ["the", "a", "model", "returns", "value", "list", "of", "items", "##s", "and"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS] + [f"w{i}" for i in range(85)]


def hf_bert_checkpoint(directory):
    """A random tiny BERT saved by transformers: config.json, model.safetensors, vocab.txt."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        type_vocab_size=2,
    )
    torch.manual_seed(0)
    model = transformers.BertModel(config, add_pooling_layer=True).eval()
    model.save_pretrained(directory)
    (directory / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    (directory / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    return model


def inputs():
    ids = np.array([[2, 5, 7, 8, 9, 3, 0, 0]], dtype="int32")
    return {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": (ids != 0).astype("int32")}


def test_hugging_face_checkpoint_directory_matches_transformers(tmp_path):
    import torch

    hf = hf_bert_checkpoint(tmp_path)
    recipe = Recipe(model=ModelConfig(preset=str(tmp_path)))
    run = tmp_path / "run"
    run.mkdir()
    tokenizer = build_tokenizer(recipe.model, recipe.data, RunDir(run))
    assert tokenizer.get_vocabulary() == VOCAB
    backbone = build_backbone(recipe.model, tokenizer.vocabulary_size())
    x = inputs()
    ours = keras.ops.convert_to_numpy(backbone(x)["sequence_output"])
    with torch.no_grad():
        theirs = hf(
            input_ids=torch.tensor(x["token_ids"], dtype=torch.long), attention_mask=torch.tensor(x["padding_mask"])
        ).last_hidden_state.numpy()
    real = x["padding_mask"][0] == 1
    np.testing.assert_allclose(ours[:, real], theirs[:, real], atol=1e-4)


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_a_tokenizer_saved_by_transformers_gives_its_ids(tmp_path, kind):
    """transformers 5's save_pretrained writes tokenizer.json alone (no vocab.txt, vocab.json or merges.txt)."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import ByteLevelBPETokenizer

    text = ["the model returns a list of values", "and the items of the list", "values, models and lists"] * 20
    if kind == "bert":
        (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
        hf = transformers.BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))
    else:
        trainer = ByteLevelBPETokenizer()
        special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        trainer.train_from_iterator(text, vocab_size=300, min_frequency=1, special_tokens=special, show_progress=False)
        hf = transformers.RobertaTokenizerFast(
            tokenizer_object=trainer._tokenizer,
            **dict(zip(("bos_token", "pad_token", "eos_token", "unk_token", "mask_token"), special)),
        )
    hf.save_pretrained(tmp_path / "checkpoint")
    assert not {"vocab.txt", "vocab.json", "merges.txt"} & {p.name for p in (tmp_path / "checkpoint").iterdir()}
    (tmp_path / "checkpoint" / "config.json").write_text(json.dumps({"model_type": kind}))
    run = tmp_path / "run"
    run.mkdir()
    model = ModelConfig(backbone=kind, preset=str(tmp_path / "checkpoint"))
    tokenizer = build_tokenizer(model, Recipe().data, RunDir(run))
    assert tokenizer.vocabulary_size() == len(hf)
    for sentence in ("The model returns values", "lists of items, and models"):
        ours = keras.ops.convert_to_numpy(tokenizer(sentence)).tolist()
        assert ours == hf(sentence, add_special_tokens=False)["input_ids"], sentence


def test_keras_hub_preset_directory_round_trip(tmp_path):
    config = ModelConfig(
        config=dict(num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64, max_sequence_length=16)
    )
    original = build_backbone(config, len(VOCAB))
    original.save_to_preset(str(tmp_path))
    keras_hub.models.BertTokenizer(vocabulary=VOCAB, lowercase=True).save_to_preset(str(tmp_path))
    loaded = build_backbone(ModelConfig(preset=str(tmp_path)), len(VOCAB))
    x = inputs()
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)["sequence_output"]),
        keras.ops.convert_to_numpy(original(x)["sequence_output"]),
        atol=1e-6,
    )
    with pytest.raises(
        InputError, match=f"model.preset: the backbone.s vocabulary has {len(VOCAB)} tokens but the tokenizer has 50"
    ):
        build_backbone(ModelConfig(preset=str(tmp_path)), 50)


def test_directory_without_config_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="holds no config.json"):
        build_backbone(ModelConfig(preset=str(tmp_path)), 10)
