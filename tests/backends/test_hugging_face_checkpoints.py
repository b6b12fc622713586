"""Hugging Face checkpoints load with every head the task can use: for each class, a tiny random model
written by transformers' `save_pretrained` (every weight perturbed, so a head that starts fresh or a
tensor put in the wrong place shows), and kerasboost's model of the same task on the backend under test
gives transformers' logits and loss within 1e-4 (float32)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerasboost.architectures import architecture
from kerasboost.errors import InputError
from kerasboost.models.backbone import build_backbone
from kerasboost.models.causal_lm import build_causal_lm_model
from kerasboost.models.classifier import build_classifier
from kerasboost.models.hugging_face import load_task_weights, open_checkpoint
from kerasboost.models.mlm import build_mlm_model
from kerasboost.recipe import ModelConfig

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB, LENGTH, BATCH = 60, 12, 3
ENCODER = dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=40)
CONFIGS = {
    "bert": lambda **extra: transformers.BertConfig(**ENCODER, max_position_embeddings=24, **extra),
    # RoBERTa numbers positions from 2 (pad id 1); its layer norms use 1e-5 in the real checkpoints.
    "roberta": lambda **extra: transformers.RobertaConfig(
        **ENCODER, max_position_embeddings=LENGTH + 2, pad_token_id=1, bos_token_id=0, eos_token_id=2, **extra
    ),
    # n_inner is not 4 x n_embd, which keras-hub's converter assumes.
    "gpt2": lambda **extra: transformers.GPT2Config(
        vocab_size=VOCAB,
        n_embd=16,
        n_layer=2,
        n_head=2,
        n_inner=40,
        n_positions=24,
        bos_token_id=2,
        eos_token_id=2,
        **extra,
    ),
}


def saved(kind: str, model_class: str, directory, **extra):
    """transformers' `model_class` of `kind`, random, every parameter perturbed, saved to `directory`."""
    torch.manual_seed(0)
    model = getattr(transformers, model_class)(CONFIGS[kind](**extra))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    model.eval().save_pretrained(directory)
    return model


def batch(kind: str):
    """Token ids (the last row padded at its end), padding mask and segment ids."""
    rng = np.random.default_rng(1)
    ids = rng.integers(5, VOCAB, (BATCH, LENGTH)).astype("int32")
    mask = np.ones_like(ids)
    mask[-1, LENGTH - 4 :] = 0
    ids[mask == 0] = 1 if kind == "roberta" else 0
    segments = np.zeros_like(ids)
    segments[:, LENGTH // 2 :] = 1
    return ids, mask, segments


def ours(kind: str, directory, build):
    """kerasboost's model of the task (`build(backbone)`), loaded from `directory`, and the load report."""
    backbone = build_backbone(ModelConfig(backbone=kind, preset=str(directory)), VOCAB)
    model = build(backbone)
    return model, load_task_weights(model, open_checkpoint(directory, architecture(kind)))[0]


def inputs(kind: str, ids, mask, segments, **extra) -> dict:
    x = {"token_ids": ids, "padding_mask": mask, **extra}
    if architecture(kind).segments:
        x["segment_ids"] = segments
    return x


def theirs(model, ids, mask, segments, kind, **extra):
    arguments = {"input_ids": torch.tensor(ids, dtype=torch.long), "attention_mask": torch.tensor(mask)}
    if kind == "bert":
        arguments["token_type_ids"] = torch.tensor(segments, dtype=torch.long)
    with torch.no_grad():
        return model(**arguments, **extra)


def cross_entropy(logits, labels) -> float:
    logits = logits - logits.max(-1, keepdims=True)
    log_probabilities = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return float(-np.take_along_axis(log_probabilities, labels[..., None], -1).mean())


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize(
    "kind, model_class, next_sentence",
    [
        ("bert", "BertForPreTraining", True),
        ("bert", "BertForMaskedLM", False),  # saved without a pooler
        ("roberta", "RobertaForMaskedLM", False),
    ],
)
def test_masked_lm_checkpoints_load_their_heads(tmp_path, kind, model_class, next_sentence):
    hf = saved(kind, model_class, tmp_path)
    model, report = ours(kind, tmp_path, lambda backbone: build_mlm_model(backbone, next_sentence=next_sentence))
    assert "masked-LM head" in report and ("next-sentence head" in report) == next_sentence, report
    assert ("pooled_dense (not in the checkpoint)" in report) == (model_class == "BertForMaskedLM"), report
    ids, mask, segments = batch(kind)
    positions = np.tile(np.array([1, 4, 7], dtype="int32"), (BATCH, 1))
    labels = np.full(ids.shape, -100)
    np.put_along_axis(labels, positions, np.take_along_axis(ids, positions, 1), 1)
    extra = {"next_sentence_label": torch.tensor([0, 1, 0])} if next_sentence else {}
    result = theirs(hf, ids, mask, segments, kind, labels=torch.tensor(labels), **extra)
    logits = result.prediction_logits if next_sentence else result.logits
    expected = np.take_along_axis(logits.numpy(), positions[..., None], 1)
    outputs = model(inputs(kind, ids, mask, segments, mask_positions=positions))
    mlm = to_numpy(outputs["mlm"] if next_sentence else outputs)
    np.testing.assert_allclose(mlm, expected, atol=1e-4)
    masked_lm_loss = cross_entropy(mlm, np.take_along_axis(ids, positions, 1))
    if next_sentence:
        nsp = to_numpy(outputs["nsp"])
        np.testing.assert_allclose(nsp, result.seq_relationship_logits.numpy(), atol=1e-4)
        assert masked_lm_loss + cross_entropy(nsp, np.array([0, 1, 0])) == pytest.approx(float(result.loss), abs=1e-4)
    else:
        assert masked_lm_loss == pytest.approx(float(result.loss), abs=1e-4)


def test_a_causal_lm_checkpoint_loads_with_its_feed_forward_width(tmp_path):
    hf = saved("gpt2", "GPT2LMHeadModel", tmp_path)
    model, report = ours("gpt2", tmp_path, build_causal_lm_model)
    assert "starts fresh" not in report, report
    ids, mask, segments = batch("gpt2")
    result = theirs(hf, ids, mask, segments, "gpt2")
    logits = to_numpy(model(inputs("gpt2", ids, mask, segments)))
    real = mask.astype(bool)
    np.testing.assert_allclose(logits[real], result.logits.numpy()[real], atol=1e-4)
    full = slice(0, 2)  # the unpadded rows: transformers' loss has no mask
    loss = theirs(
        hf, ids[full], mask[full], segments[full], "gpt2", labels=torch.tensor(ids[full], dtype=torch.long)
    ).loss
    assert cross_entropy(logits[full, :-1], ids[full, 1:]) == pytest.approx(float(loss), abs=1e-4)


@pytest.mark.parametrize(
    "kind, model_class",
    [
        ("bert", "BertForSequenceClassification"),
        ("roberta", "RobertaForSequenceClassification"),
        ("gpt2", "GPT2ForSequenceClassification"),
    ],
)
def test_classification_checkpoints_load_their_classifier_when_the_labels_match(tmp_path, kind, model_class):
    pad = {"gpt2": {"pad_token_id": 0}}.get(kind, {})
    hf = saved(kind, model_class, tmp_path, num_labels=3, **pad)

    def classifier(labels):
        return lambda backbone: build_classifier(backbone, labels, 0.1)

    model, report = ours(kind, tmp_path, classifier(3))
    assert "classifier" in report and "starts fresh" not in report, report
    ids, mask, segments = batch(kind)
    labels = np.array([0, 2, 1])
    result = theirs(hf, ids, mask, segments, kind, labels=torch.tensor(labels))
    logits = to_numpy(model(inputs(kind, ids, mask, segments)))
    np.testing.assert_allclose(logits, result.logits.numpy(), atol=1e-4)
    assert cross_entropy(logits, labels) == pytest.approx(float(result.loss), abs=1e-4)

    _, other = ours(kind, tmp_path, classifier(2))
    assert "starts fresh: classifier (the checkpoint's" in other and "3" in other, other


def test_a_backbone_checkpoint_leaves_the_heads_fresh(tmp_path):
    saved("bert", "BertModel", tmp_path)
    _, report = ours("bert", tmp_path, build_mlm_model)
    assert report.endswith("loaded backbone · starts fresh: masked-LM head (not in the checkpoint)"), report


def test_checkpoints_that_do_not_fit_are_one_line_errors(tmp_path):
    saved("gpt2", "GPT2LMHeadModel", tmp_path / "gpt2")
    with pytest.raises(InputError, match="holds a 'gpt2' checkpoint, not BERT; set model.backbone"):
        build_backbone(ModelConfig(backbone="bert", preset=str(tmp_path / "gpt2")), VOCAB)
    with pytest.raises(InputError, match="the checkpoint's vocabulary has 60 tokens but the tokenizer has 61"):
        build_backbone(ModelConfig(backbone="gpt2", preset=str(tmp_path / "gpt2")), VOCAB + 1)
    saved("bert", "BertModel", tmp_path / "relu", hidden_act="relu")
    with pytest.raises(InputError, match="hidden_act 'relu' is not supported"):
        build_backbone(ModelConfig(backbone="bert", preset=str(tmp_path / "relu")), VOCAB)


WORDS = ["the", "model", "returns", "a", "list", "of", "values", "and", "items", "##s", "file", "name"]


def tokenizer_for(kind: str):
    """A small keras-hub tokenizer of `kind`: WordPiece for BERT, byte-level BPE trained here otherwise."""
    import keras_hub

    from kerasboost.data.tokenizer import RESERVED_TOKENS, train_byte_level_bpe

    spec = architecture(kind)
    tokenizer_class = getattr(keras_hub.models, spec.tokenizer_class)
    if spec.vocabulary == "wordpiece":
        return tokenizer_class(vocabulary=RESERVED_TOKENS + WORDS + [f"w{i}" for i in range(40)], lowercase=True)
    text = ["The model returns a list of values", "and the items of the file name"] * 30
    vocabulary, merges = train_byte_level_bpe(lambda: iter(text), 300, spec.special_tokens, text)
    return tokenizer_class(vocabulary=vocabulary, merges=merges)


AUTO_CLASSES = {
    "mlm": "AutoModelForMaskedLM",
    "bert_pretraining": "AutoModelForPreTraining",
    "causal_lm": "AutoModelForCausalLM",
    "classification": "AutoModelForSequenceClassification",
}


@pytest.mark.parametrize(
    "kind, task",
    [
        ("bert", "mlm"),
        ("bert", "bert_pretraining"),
        ("bert", "classification"),
        ("roberta", "mlm"),
        ("roberta", "classification"),
        ("gpt2", "causal_lm"),
        ("gpt2", "classification"),
    ],
)
def test_export_to_transformers_gives_our_logits_and_token_ids(tmp_path, kind, task):
    from kerasboost.models.hugging_face import save_pretrained

    tokenizer = tokenizer_for(kind)
    config = dict(num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=40, dropout=0.0, max_sequence_length=20)
    keras.utils.set_random_seed(0)
    backbone = build_backbone(ModelConfig(backbone=kind, config=config), tokenizer.vocabulary_size())
    labels = ["network", "files", "numbers"] if task == "classification" else None
    build = {
        "mlm": build_mlm_model,
        "bert_pretraining": lambda b: build_mlm_model(b, next_sentence=True),
        "causal_lm": build_causal_lm_model,
        "classification": lambda b: build_classifier(b, 3, 0.0),
    }[task]
    model = build(backbone)
    rng = np.random.default_rng(0)
    for variable in model.weights:  # trained-looking: no zero bias or unit norm left
        variable.assign(keras.ops.convert_to_numpy(variable) + rng.normal(0, 0.05, variable.shape).astype("float32"))
    save_pretrained(model, backbone, tokenizer, task, labels, tmp_path)

    hf = getattr(transformers, AUTO_CLASSES[task]).from_pretrained(str(tmp_path)).eval()
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    sentence = "the model returns a list of values"
    assert (
        hf_tokenizer(sentence, add_special_tokens=False)["input_ids"]
        == keras.ops.convert_to_numpy(tokenizer(sentence)).tolist()
    )
    ids, mask, segments = batch(kind)
    ids = ids % tokenizer.vocabulary_size()
    ids[mask == 0] = tokenizer.pad_token_id
    result = theirs(hf, ids, mask, segments, kind)
    if task in ("mlm", "bert_pretraining"):
        positions = np.tile(np.array([1, 4, 7], dtype="int32"), (BATCH, 1))
        outputs = model(inputs(kind, ids, mask, segments, mask_positions=positions))
        mlm = to_numpy(outputs["mlm"] if task == "bert_pretraining" else outputs)
        logits = result.prediction_logits if task == "bert_pretraining" else result.logits
        np.testing.assert_allclose(mlm, np.take_along_axis(logits.numpy(), positions[..., None], 1), atol=1e-4)
        if task == "bert_pretraining":
            np.testing.assert_allclose(to_numpy(outputs["nsp"]), result.seq_relationship_logits.numpy(), atol=1e-4)
        return
    ours = to_numpy(model(inputs(kind, ids, mask, segments)))
    if task == "causal_lm":
        real = mask.astype(bool)
        np.testing.assert_allclose(ours[real], result.logits.numpy()[real], atol=1e-4)
        return
    np.testing.assert_allclose(ours, result.logits.numpy(), atol=1e-4)
    assert hf.config.id2label == dict(enumerate(labels))
