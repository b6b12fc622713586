"""Hugging Face PEFT interop: our adapters load with `peft` on `transformers` models, and theirs load here.

`transformers` and `peft` are test-only dependencies; the Hugging Face side always runs on PyTorch.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from kerasboost.architectures import architecture_of
from kerasboost.models.backbone import build_backbone
from kerasboost.models.causal_lm import build_causal_lm_model
from kerasboost.peft.hf_format import export_peft, import_peft
from kerasboost.peft.inject import adapter_layers, apply_peft
from kerasboost.recipe import ModelConfig, PeftConfig

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

VOCAB = 120
IDS = np.array([[5, 17, 23, 42, 7, 99, 3, 11]], dtype="int32")


def hf_model(kind: str, directory):
    torch.manual_seed(0)
    if kind == "bert":
        config = transformers.BertConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=32,
        )
        model = transformers.BertModel(config, add_pooling_layer=True)
    elif kind == "roberta":  # RobertaForMaskedLM: the class RoBERTa adapters are exported for (roberta. keys)
        config = transformers.RobertaConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=34,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            layer_norm_eps=1e-5,  # RoBERTa's (keras-hub's RobertaBackbone has it built in)
        )
        model = transformers.RobertaForMaskedLM(config)
    else:
        config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=32)
        model = transformers.GPT2LMHeadModel(config)
    model.eval().save_pretrained(directory)
    return model


def hf_output(model, kind):
    """The encoder's last hidden states (BERT, RoBERTa) or the LM's logits (GPT-2)."""
    with torch.no_grad():
        result = model(
            input_ids=torch.tensor(IDS, dtype=torch.long),
            attention_mask=torch.ones(IDS.shape, dtype=torch.long),
            output_hidden_states=True,
        )
    return (result.logits if kind == "gpt2" else result.hidden_states[-1]).numpy()


def our_model(kind, directory):
    backbone = build_backbone(ModelConfig(backbone=kind, preset=str(directory)), VOCAB)
    model = build_causal_lm_model(backbone) if kind == "gpt2" else backbone
    return backbone, model


def our_output(model, kind):
    x = {"token_ids": IDS, "padding_mask": np.ones_like(IDS)}
    if kind == "bert":
        x["segment_ids"] = np.zeros_like(IDS)
        return keras.ops.convert_to_numpy(model(x)["sequence_output"])
    return keras.ops.convert_to_numpy(model(x))  # RoBERTa's sequence output, GPT-2's logits


CASES = [
    ("bert", "lora", "all-linear"),
    ("bert", "dora", ["query", "value"]),
    ("gpt2", "lora", ["query", "value", "output"]),
    ("gpt2", "dora", "all-linear"),
    ("roberta", "lora", "all-linear"),
    ("roberta", "dora", ["query", "value"]),
]


@pytest.mark.parametrize("kind, method, targets", CASES)
def test_our_adapter_runs_in_peft(tmp_path, kind, method, targets):
    hf = hf_model(kind, tmp_path / "base")
    backbone, model = our_model(kind, tmp_path / "base")
    np.testing.assert_allclose(our_output(model, kind), hf_output(hf, kind), atol=1e-4)
    apply_peft(backbone, PeftConfig(method=method, rank=4, alpha=8, targets=targets), seed=0)
    rng = np.random.default_rng(0)
    for layer in adapter_layers(backbone):  # a trained-looking adapter: non-zero B, perturbed magnitudes
        layer.adapter_b.assign(rng.normal(0, 0.05, layer.adapter_b.shape).astype("float32"))
        if layer.adapter_magnitude is not None:
            layer.adapter_magnitude.assign(
                keras.ops.convert_to_numpy(layer.adapter_magnitude)
                * rng.uniform(0.9, 1.1, layer.adapter_magnitude.shape).astype("float32")
            )
    ours = our_output(model, kind)
    export_peft(backbone, backbone, tmp_path / "adapter")
    theirs = hf_output(peft.PeftModel.from_pretrained(hf, str(tmp_path / "adapter")).eval(), kind)
    assert not np.allclose(theirs, hf_output(hf_model(kind, tmp_path / "again"), kind), atol=1e-3), (
        "the adapter must matter"
    )
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


@pytest.mark.parametrize(
    "kind, method", [("bert", "lora"), ("bert", "dora"), ("gpt2", "lora"), ("gpt2", "dora"), ("roberta", "lora")]
)
def test_peft_adapter_runs_here(tmp_path, kind, method):
    hf = hf_model(kind, tmp_path / "base")
    modules = (
        ["c_attn", "c_proj", "c_fc"] if kind == "gpt2" else ["query", "value", "output.dense", "intermediate.dense"]
    )
    config = peft.LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=modules,
        use_dora=method == "dora",
        init_lora_weights=True,
        fan_in_fan_out=kind == "gpt2",
    )
    adapted = peft.get_peft_model(hf, config)
    with torch.no_grad():
        for name, parameter in adapted.named_parameters():
            if "lora_B" in name or "lora_magnitude" in name:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    adapted.save_pretrained(tmp_path / "adapter")
    theirs = hf_output(adapted.eval(), kind)
    backbone, model = our_model(kind, tmp_path / "base")
    report = import_peft(backbone, backbone, tmp_path / "adapter", PeftConfig(), seed=0)
    # BERT and RoBERTa: 5 modules a block ("output.dense" is the attention's and the block's); GPT-2: c_attn is q, k, v
    assert len(report.wrapped) == (12 if kind == "gpt2" else 10)
    np.testing.assert_allclose(our_output(model, kind), theirs, atol=1e-4)


@pytest.mark.parametrize("kind", ["bert", "roberta", "gpt2"])
def test_modules_to_save_travel_with_the_adapter(tmp_path, kind):
    """A LoRA classifier run's trained head (`peft.modules_to_save: [classifier]`) is in the PEFT export
    under PEFT's own names, so *ForSequenceClassification + PeftModel gives our logits; and it imports back."""
    classes = {"bert": "BertForSequenceClassification", "roberta": "RobertaForSequenceClassification"}
    config = hf_model(kind, tmp_path / "config").config
    config.num_labels, config.pad_token_id = 3, config.pad_token_id or 0
    torch.manual_seed(0)
    hf = getattr(transformers, classes.get(kind, "GPT2ForSequenceClassification"))(config).eval()
    hf.save_pretrained(tmp_path / "base")

    def classifier():
        from kerasboost.models.classifier import build_classifier
        from kerasboost.models.hugging_face import load_task_weights, open_checkpoint

        backbone = build_backbone(ModelConfig(backbone=kind, preset=str(tmp_path / "base")), VOCAB)
        model = build_classifier(backbone, 3, 0.0)
        load_task_weights(model, open_checkpoint(tmp_path / "base", architecture_of(backbone)))
        return backbone, model

    backbone, model = classifier()
    settings = PeftConfig(rank=4, alpha=8, targets=["query", "value"], modules_to_save=["classifier"])
    apply_peft(model, settings, seed=0)
    rng = np.random.default_rng(0)
    for variable in model.trainable_weights:  # trained-looking adapters and head
        variable.assign(keras.ops.convert_to_numpy(variable) + rng.normal(0, 0.05, variable.shape).astype("float32"))
    x = {"token_ids": IDS, "padding_mask": np.ones_like(IDS)}
    if kind == "bert":
        x["segment_ids"] = np.zeros_like(IDS)
    ours = keras.ops.convert_to_numpy(model(x))
    export_peft(model, backbone, tmp_path / "adapter", ["classifier"])
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["modules_to_save"] == [
        "score" if kind == "gpt2" else "classifier"
    ]
    adapted = peft.PeftModel.from_pretrained(hf, str(tmp_path / "adapter")).eval()
    with torch.no_grad():
        theirs = adapted(input_ids=torch.tensor(IDS, dtype=torch.long)).logits.numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-4)

    base, again = classifier()
    report = import_peft(again, base, tmp_path / "adapter", settings, seed=0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(again(x)), ours, atol=1e-4)
    assert {v.path.split("/")[0] for v in again.trainable_weights} >= {"classifier"}, report


def test_a_peft_adapter_that_does_not_fit_is_refused_in_one_line(tmp_path):
    """An adapter made by peft for a wider BERT, and one whose tensors were renamed, are input errors."""
    from safetensors.numpy import load_file, save_file

    from kerasboost.errors import InputError

    torch.manual_seed(0)
    wide = transformers.BertModel(
        transformers.BertConfig(
            vocab_size=VOCAB, hidden_size=48, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
        )
    )
    peft.get_peft_model(wide, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query"])).save_pretrained(
        tmp_path / "wide"
    )
    hf_model("bert", tmp_path / "base")
    backbone, _ = our_model("bert", tmp_path / "base")
    with pytest.raises(InputError, match=r"peft.adapter: .*query has lora_A \(4, 48\).*this model needs \(4, 32\)"):
        import_peft(backbone, backbone, tmp_path / "wide", PeftConfig(), seed=0)

    renamed = tmp_path / "renamed"
    renamed.mkdir()
    (renamed / "adapter_config.json").write_text((tmp_path / "wide" / "adapter_config.json").read_text())
    tensors = load_file(tmp_path / "wide" / "adapter_model.safetensors")
    save_file(
        {key.replace("attention.self.query", "attention.self.nope"): v for key, v in tensors.items()},
        renamed / "adapter_model.safetensors",
    )
    backbone, _ = our_model("bert", tmp_path / "base")
    with pytest.raises(InputError, match="module '.*nope' is not in this BertBackbone") as error:
        import_peft(backbone, backbone, renamed, PeftConfig(), seed=0)
    assert "\n" not in str(error.value)
