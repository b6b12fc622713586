"""Our LoRA / rsLoRA / DoRA layers on keras-hub BERT and GPT-2, on the backend under test."""

from __future__ import annotations

import keras
import keras_hub
import numpy as np
import pytest

from kerasboost.errors import InputError
from kerasboost.export import merged_backbone
from kerasboost.models.backbone import build_backbone
from kerasboost.models.mlm import build_mlm_model, mlm_loss_and_metrics
from kerasboost.peft.adapter import load_adapter, save_adapter
from kerasboost.peft.inject import adapter_layers, apply_peft, merge_adapters, unmerge_adapters
from kerasboost.peft.lora import LoraLayer
from kerasboost.recipe import ModelConfig, PeftConfig

CONFIG = dict(num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64, dropout=0.0, max_sequence_length=16)
VOCAB = 200


def bert(seed=0):
    keras.utils.set_random_seed(seed)
    return build_backbone(ModelConfig(config=CONFIG), VOCAB)


def inputs(rows=4, length=12, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, VOCAB, (rows, length)).astype("int32")
    return {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": np.ones_like(ids)}


def out(backbone, x):
    result = backbone(x)
    return keras.ops.convert_to_numpy(result["sequence_output"] if isinstance(result, dict) else result)


def randomise_b(model, seed=1):
    rng = np.random.default_rng(seed)
    for layer in adapter_layers(model):
        layer.adapter_b.assign(rng.normal(0, 0.1, layer.adapter_b.shape).astype("float32"))


@pytest.mark.parametrize("method", ["lora", "dora"])
@pytest.mark.parametrize("architecture", ["bert", "gpt2"])
def test_outputs_are_unchanged_at_init(method, architecture):
    keras.utils.set_random_seed(0)
    backbone = build_backbone(ModelConfig(backbone=architecture, config=CONFIG), VOCAB)
    x = inputs()
    if architecture == "gpt2":
        x.pop("segment_ids")
    before = out(backbone, x)
    report = apply_peft(backbone, PeftConfig(method=method, targets="all-linear"), seed=0)
    assert len(report.wrapped) == 6 * CONFIG["num_layers"]
    assert all(isinstance(layer, LoraLayer) for layer in adapter_layers(backbone))
    np.testing.assert_array_equal(out(backbone, x), before)


@pytest.mark.parametrize("method, rslora", [("lora", False), ("lora", True), ("dora", False)])
def test_merge_matches_and_unmerge_restores(method, rslora):
    backbone = bert()
    base = {v.path: keras.ops.convert_to_numpy(v).copy() for v in backbone.weights}
    apply_peft(backbone, PeftConfig(method=method, rslora=rslora, targets="all-linear", rank=4, alpha=8), seed=0)
    randomise_b(backbone)
    x = inputs()
    adapted = out(backbone, x)
    assert not np.allclose(adapted, out(bert(), x), atol=1e-3), "a non-zero B must change the outputs"
    merge_adapters(backbone)
    np.testing.assert_allclose(out(backbone, x), adapted, atol=1e-5)
    unmerge_adapters(backbone)
    for variable in backbone.weights:
        if variable.path in base:
            np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), base[variable.path], atol=1e-6)
    np.testing.assert_allclose(out(backbone, x), adapted, atol=1e-5)


def test_scale_is_alpha_over_rank_or_its_square_root():
    layers = {}
    for rslora in (False, True):
        backbone = bert()
        apply_peft(backbone, PeftConfig(rank=4, alpha=8, rslora=rslora), seed=0)
        layers[rslora] = adapter_layers(backbone)[0]
    assert layers[False].adapter_scale == 2.0 and layers[True].adapter_scale == 4.0


def mlm_model(peft: PeftConfig | None, seed=0):
    keras.utils.set_random_seed(seed)
    model = build_mlm_model(build_backbone(ModelConfig(config=CONFIG), VOCAB))
    report = apply_peft(model, peft, seed=seed) if peft else None
    loss, metrics = mlm_loss_and_metrics()
    model.compile(optimizer=keras.optimizers.AdamW(1e-2), loss=loss, weighted_metrics=metrics)
    return model, report


def mlm_batch():
    x = inputs(rows=8)
    x["mask_positions"] = np.tile(np.arange(1, 5, dtype="int32"), (8, 1))
    labels = np.random.default_rng(3).integers(5, VOCAB, (8, 4)).astype("int32")
    return x, labels


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_training_moves_only_the_adapter(method):
    peft = PeftConfig(method=method, rank=4, targets=["query", "value", "intermediate"])
    model, report = mlm_model(peft)
    expected = sum(
        4 * (fan_in + fan_out) + (fan_out if method == "dora" else 0) for _, fan_in, fan_out, _ in report.wrapped
    )
    assert report.trainable == expected == sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    adapters = {id(v) for layer in adapter_layers(model) for v in layer.adapter_variables}
    frozen = {v.path: keras.ops.convert_to_numpy(v).copy() for v in model.weights if id(v) not in adapters}
    x, labels = mlm_batch()
    history = model.fit(x, labels, epochs=8, verbose=0).history["loss"]
    assert history[-1] < history[0]
    for variable in model.weights:
        if variable.path in frozen:
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(variable), frozen[variable.path], err_msg=variable.path
            )
    assert len(model.optimizer.variables) < 4 * len(model.trainable_variables) + 4, "optimizer state only for adapters"


def test_dropout_is_deterministic_under_a_seed():
    peft = PeftConfig(rank=4, dropout=0.5, targets="all-linear")
    results = []
    for _ in range(2):
        model, _ = mlm_model(peft, seed=7)
        x, labels = mlm_batch()
        model.fit(x, labels, epochs=3, verbose=0)
        results.append([keras.ops.convert_to_numpy(v) for v in model.trainable_variables])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_modules_to_save_train_in_full():
    model, report = mlm_model(PeftConfig(rank=2, modules_to_save=["mlm_head"]))
    head = {id(v) for v in model.get_layer("mlm_head").trainable_variables}
    assert head and head <= {id(v) for v in model.trainable_variables}
    with pytest.raises(InputError, match="peft.modules_to_save: the model has no layer named 'nope'"):
        apply_peft(bert(), PeftConfig(modules_to_save=["nope"]), seed=0)
    with pytest.raises(InputError, match="peft.targets: unknown target 'qkv'"):
        apply_peft(bert(), PeftConfig(targets=["qkv"]), seed=0)


def test_checkpoint_weights_round_trip(tmp_path):
    model, _ = mlm_model(PeftConfig(method="dora", rank=2))
    randomise_b(model)
    x, _ = mlm_batch()
    expected = keras.ops.convert_to_numpy(model(x))
    model.save_weights(tmp_path / "model.weights.h5")
    restored, _ = mlm_model(PeftConfig(method="dora", rank=2), seed=5)
    restored.load_weights(tmp_path / "model.weights.h5")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored(x)), expected, atol=1e-6)


def test_adapter_file_round_trip_and_wrong_base(tmp_path):
    backbone = bert()
    apply_peft(backbone, PeftConfig(rank=4, targets=["query", "value"]), seed=0)
    randomise_b(backbone)
    x = inputs()
    expected = out(backbone, x)
    save_adapter(backbone, backbone, tmp_path / "adapter")
    fresh = bert()
    report = load_adapter(fresh, fresh, tmp_path / "adapter", PeftConfig(), seed=3)
    assert len(report.wrapped) == 4
    np.testing.assert_allclose(out(fresh, x), expected, atol=1e-6)
    keras.utils.set_random_seed(0)
    wider = build_backbone(ModelConfig(config={**CONFIG, "hidden_dim": 64, "intermediate_dim": 128}), VOCAB)
    with pytest.raises(
        InputError,
        match=r"^peft.adapter: the adapter was trained on a base with hidden_dim=32, this model has hidden_dim=64$",
    ):
        load_adapter(wider, wider, tmp_path / "adapter", PeftConfig(), seed=0)


def test_merged_export_loads_in_plain_keras_hub(tmp_path):
    backbone = bert()
    apply_peft(backbone, PeftConfig(method="dora", rank=4, targets="all-linear"), seed=0)
    randomise_b(backbone)
    x = inputs()
    expected = out(backbone, x)
    merged_backbone(backbone).save_to_preset(str(tmp_path))
    plain = keras_hub.models.BertBackbone.from_preset(str(tmp_path))
    assert not any("lora" in v.path for v in plain.weights)
    np.testing.assert_allclose(out(plain, x), expected, atol=1e-5)
    np.testing.assert_allclose(out(backbone, x), expected, atol=1e-6), "exporting leaves the adapters unmerged"


def test_mixed_bfloat16_keeps_adapters_float32():
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model, _ = mlm_model(PeftConfig(rank=4, targets="all-linear"))
        assert all(v.dtype == "float32" for layer in adapter_layers(model) for v in layer.adapter_variables)
        x, labels = mlm_batch()
        history = model.fit(x, labels, epochs=4, verbose=0).history["loss"]
        assert np.isfinite(history).all() and history[-1] < history[0]
    finally:
        keras.config.set_dtype_policy("float32")


def test_int8_base_trains_adapters_and_exports_merged(tmp_path):
    x = inputs()
    reference = out(bert(), x)
    model, report = mlm_model(PeftConfig(rank=4, targets="all-linear", quantize_base="int8"))
    before, after = report.weight_bytes
    assert after < 0.8 * before, report.lines()
    backbone = next(layer for layer in model.layers if isinstance(layer, keras_hub.models.BertBackbone))
    assert all(layer._kernel.dtype == "int8" for layer in adapter_layers(model))
    quantized = out(backbone, x)
    assert np.abs(quantized - reference).max() < 0.1 * np.abs(reference).max(), "int8 stays close to the float base"
    kernels = [keras.ops.convert_to_numpy(layer._kernel).copy() for layer in adapter_layers(model)]
    batch, labels = mlm_batch()
    history = model.fit(batch, labels, epochs=6, verbose=0).history["loss"]
    assert history[-1] < history[0]
    for kernel, layer in zip(kernels, adapter_layers(model)):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer._kernel), kernel)
    model.save_weights(tmp_path / "model.weights.h5")
    restored, _ = mlm_model(PeftConfig(rank=4, targets="all-linear", quantize_base="int8"), seed=4)
    restored.load_weights(tmp_path / "model.weights.h5")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(restored(batch)), keras.ops.convert_to_numpy(model(batch)), atol=1e-5
    )
    merged_backbone(backbone).save_to_preset(str(tmp_path / "merged"))
    plain = keras_hub.models.BertBackbone.from_preset(str(tmp_path / "merged"))
    np.testing.assert_allclose(out(plain, x), out(backbone, x), atol=1e-4)
