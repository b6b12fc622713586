"""Bottleneck adapters (houlsby, pfeiffer, parallel) on keras-hub BERT, RoBERTa and GPT-2, on the backend under
test: exact at init, where each placement sits (a block computed by hand), what trains, the parameter count,
weights files and adapter files, and the exports that must refuse them."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from types import SimpleNamespace

import keras
import keras_hub
import numpy as np
import pytest

from kerasboost import runner
from kerasboost.architectures import architecture
from kerasboost.errors import InputError
from kerasboost.export import export_preset, merged_backbone, plain_backbone
from kerasboost.models.backbone import build_backbone
from kerasboost.models.classifier import build_classifier
from kerasboost.peft.adapter import load_adapter, save_adapter
from kerasboost.peft.bottleneck import BottleneckLayer
from kerasboost.peft.inject import adapter_layers, apply_peft, merge_adapters
from kerasboost.recipe import BottleneckConfig, ModelConfig, PeftConfig

CONFIG = dict(num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64, dropout=0.0, max_sequence_length=16)
VOCAB = 200
REDUCTION = 8  # a bottleneck of 4
ARCHITECTURES = ("bert", "roberta", "gpt2")
PLACEMENTS = ("houlsby", "pfeiffer", "parallel")
SITES = {"houlsby": 2, "pfeiffer": 1, "parallel": 1}  # adapters per block
CASES = [(name, placement) for name in ARCHITECTURES for placement in PLACEMENTS]
REFUSED = r"bottleneck adapters: .*; use export --format adapter \(the adapters alone\) or --format saved_model"


def backbone(name: str, seed: int = 0):
    keras.utils.set_random_seed(seed)
    return build_backbone(ModelConfig(backbone=name, config=CONFIG), VOCAB)


def inputs(name: str, rows: int = 3, length: int = 10, seed: int = 0) -> dict:
    ids = np.random.default_rng(seed).integers(5, VOCAB, (rows, length)).astype("int32")
    x = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    if architecture(name).segments:
        x["segment_ids"] = np.zeros_like(ids)
    return x


def out(model, x) -> np.ndarray:
    result = model(x)
    result = result["sequence_output"] if isinstance(result, dict) else result
    return keras.ops.convert_to_numpy(keras.ops.cast(result, "float32"))


def peft(placement: str, **settings) -> PeftConfig:
    kept = {key: settings.pop(key) for key in ("modules_to_save", "quantize_base") if key in settings}
    bottleneck = BottleneckConfig(placement=placement, reduction_factor=REDUCTION, **settings)
    return PeftConfig(method="bottleneck", bottleneck=bottleneck, **kept)


def randomise(model, seed: int = 1) -> None:
    """Every adapter variable random (the up-projection and the biases start at zero)."""
    rng = np.random.default_rng(seed)
    for layer in adapter_layers(model):
        for variable in layer.adapter_variables:
            variable.assign(rng.normal(0, 0.2, variable.shape).astype("float32"))


def numpy(variable) -> np.ndarray:
    return keras.ops.convert_to_numpy(variable).astype("float64")


@dataclass
class Case:
    name: str
    placement: str
    x: dict
    base: np.ndarray  # the plain backbone's outputs
    fresh: keras.Model  # adapters as initialised
    report: object
    trained: keras.Model  # adapters randomised (read only)


@pytest.fixture(scope="module", params=CASES, ids=[f"{name}-{placement}" for name, placement in CASES])
def case(request) -> Case:
    name, placement = request.param
    x = inputs(name)
    base = out(backbone(name), x)
    fresh = backbone(name)
    report = apply_peft(fresh, peft(placement), seed=0)
    trained = backbone(name)
    apply_peft(trained, peft(placement), seed=0)
    randomise(trained)
    return Case(name, placement, x, base, fresh, report, trained)


def test_outputs_are_bitwise_unchanged_at_init_and_change_once_trained(case):
    assert all(isinstance(layer, BottleneckLayer) for layer in adapter_layers(case.fresh))
    np.testing.assert_array_equal(out(case.fresh, case.x), case.base)
    assert np.abs(out(case.trained, case.x) - case.base).max() > 1e-2, "non-zero adapters must change the outputs"


def test_trainable_parameters_follow_the_formula(case):
    hidden, width = CONFIG["hidden_dim"], CONFIG["hidden_dim"] // REDUCTION
    expected = CONFIG["num_layers"] * SITES[case.placement] * (2 * hidden * width + width + hidden)
    counted = sum(math.prod(v.shape) for v in case.fresh.trainable_variables)
    assert case.report.trainable == counted == expected
    layers = CONFIG["num_layers"] * (2 if case.placement in ("houlsby", "parallel") else 1)
    assert len(case.report.wrapped) == layers, case.report.lines()
    assert all(v.dtype == "float32" for layer in adapter_layers(case.fresh) for v in layer.adapter_variables)


def test_weights_file_round_trip(case, tmp_path):
    case.trained.save_weights(tmp_path / "model.weights.h5")
    restored = backbone(case.name, seed=5)
    apply_peft(restored, peft(case.placement), seed=7)
    restored.load_weights(tmp_path / "model.weights.h5")
    np.testing.assert_array_equal(out(restored, case.x), out(case.trained, case.x))


def test_adapter_file_round_trip(case, tmp_path):
    save_adapter(case.trained, case.trained, tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["method"] == "bottleneck" and "rank" not in config
    assert config["bottleneck"] == {
        "placement": case.placement,
        "reduction_factor": REDUCTION,
        "activation": "swish",
        "scaling": 1.0,
    }
    fresh = backbone(case.name)  # the same base
    report = load_adapter(fresh, fresh, tmp_path / "adapter", PeftConfig(), seed=3)
    assert sorted(row[0] for row in report.wrapped) == sorted(layer.path for layer in adapter_layers(case.trained))
    np.testing.assert_array_equal(out(fresh, case.x), out(case.trained, case.x))


def test_merges_and_merged_exports_are_refused_in_one_line_and_the_base_exports(case, tmp_path, monkeypatch):
    model = case.trained
    for refused in (
        lambda: merge_adapters(model),
        lambda: merged_backbone(model),
        lambda: export_preset(model, None, tmp_path / "preset"),
    ):
        with pytest.raises(InputError, match=f"^(merge|a merged export): {REFUSED}") as error:
            refused()
        assert "\n" not in str(error.value)
    trained = SimpleNamespace(
        task=SimpleNamespace(model=model, backbone=model, tokenizer=None),
        run_dir=SimpleNamespace(root=tmp_path),
        recipe=None,
        step=1,
    )
    monkeypatch.setattr(runner, "load_trained", lambda run, recipe=None, with_data=True: trained)
    for form, what in [("merge", "merge")] + [(f, f"export --format {f}") for f in ("preset", "transformers", "peft")]:
        with pytest.raises(InputError, match=f"^{what}: {REFUSED}") as error:
            runner.export_run(str(tmp_path), form, None)
        assert "\n" not in str(error.value)
    assert not any(tmp_path.iterdir()), "nothing is written"
    base = plain_backbone(model, merge=False)
    assert not any("bottleneck" in v.path for v in base.weights)
    np.testing.assert_array_equal(out(base, case.x), case.base)


def layer_norm(x: np.ndarray, layer) -> np.ndarray:
    mean, variance = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + layer.epsilon) * numpy(layer.gamma) + numpy(layer.beta)


ACTIVATIONS = {
    "swish": lambda z: z / (1 + np.exp(-z)),
    "relu": lambda z: np.maximum(z, 0),
    "gelu": lambda z: 0.5 * z * (1 + np.vectorize(math.erf)(z / math.sqrt(2))),
}
# Each placement with another activation and scale, so the block check covers them all.
SETTINGS = {
    "houlsby": dict(activation="swish", scaling=2.0),
    "pfeiffer": dict(activation="relu", scaling=0.5),
    "parallel": dict(activation="gelu", scaling=4.0),
}


def expected_block(block, h: np.ndarray, placement: str, adapters: bool) -> np.ndarray:
    """One keras-hub block whose attention output projection is all zero, by hand: the adapters where each
    paper puts them (serial on a sublayer's output before dropout, residual and norm; parallel from the
    feed-forward sublayer's input). Only the feed-forward activation is keras-hub's own."""
    settings = BottleneckConfig(placement=placement, **SETTINGS[placement])
    act = ACTIVATIONS[settings.activation]
    intermediate, output = block._feedforward_intermediate_dense, block._feedforward_output_dense

    def adapter(down, up, value):
        if not adapters:
            return 0.0
        hidden = act(value @ numpy(down.adapter_down) + numpy(down.adapter_down_bias))
        return settings.scaling * (hidden @ numpy(up.adapter_up) + numpy(up.adapter_up_bias))

    attention = np.zeros_like(h)
    if placement == "houlsby":
        projection = block._self_attention_layer._output_dense
        attention = attention + adapter(projection, projection, attention)
    if block.normalize_first:
        x = h + attention
        ffn_input = layer_norm(x, block._feedforward_layer_norm)
    else:
        x = ffn_input = layer_norm(h + attention, block._self_attention_layer_norm)
    pre = ffn_input @ numpy(intermediate.kernel) + numpy(intermediate.bias)
    activated = numpy(intermediate.activation(keras.ops.convert_to_tensor(pre.astype("float32"))))
    ffn = activated @ numpy(output.kernel) + numpy(output.bias)
    ffn = ffn + (adapter(intermediate, output, ffn_input) if placement == "parallel" else adapter(output, output, ffn))
    return x + ffn if block.normalize_first else layer_norm(x + ffn, block._feedforward_layer_norm)


@pytest.mark.parametrize("name, placement", CASES)
def test_a_block_computes_what_the_placement_says(name, placement):
    model = backbone(name)
    apply_peft(model, peft(placement, **SETTINGS[placement]), seed=0)
    randomise(model)
    block = model.get_layer("transformer_layer_0")
    projection = block._self_attention_layer._output_dense
    for variable in (projection.kernel, projection.bias):
        variable.assign(np.zeros(variable.shape, "float32"))
    h = np.random.default_rng(2).normal(0, 1, (2, 5, CONFIG["hidden_dim"])).astype("float32")
    computed = keras.ops.convert_to_numpy(block(h, training=False))
    expected = expected_block(block, h.astype("float64"), placement, adapters=True)
    np.testing.assert_allclose(computed, expected, atol=1e-4, rtol=1e-4)
    assert np.abs(expected - expected_block(block, h, placement, adapters=False)).max() > 1e-2


@pytest.mark.parametrize("name, placement", CASES)
def test_training_moves_only_the_adapters_and_modules_to_save(name, placement):
    keras.utils.set_random_seed(0)
    model = build_classifier(backbone(name), 3, 0.0)
    report = apply_peft(model, peft(placement, modules_to_save=["classifier"]), seed=0)
    head = model.get_layer("classifier").weights
    moving = [v for layer in adapter_layers(model) for v in layer.adapter_variables] + head
    assert {id(v) for v in model.trainable_variables} == {id(v) for v in moving}
    assert report.trainable == sum(math.prod(v.shape) for v in moving)
    start = {id(v): keras.ops.convert_to_numpy(v).copy() for v in model.weights}
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    labels = np.array([0, 1, 2, 1, 0, 2], "int32")
    model.fit(inputs(name, rows=6), labels, batch_size=6, epochs=3, verbose=0)
    trained = {id(v) for v in moving}
    for variable in model.weights:
        value = keras.ops.convert_to_numpy(variable)
        if id(variable) in trained:
            assert not np.array_equal(value, start[id(variable)]), f"{variable.path} did not train"
        else:
            np.testing.assert_array_equal(value, start[id(variable)], err_msg=variable.path)


@pytest.mark.parametrize("placement", ["houlsby", "parallel"])
def test_mixed_bfloat16_keeps_adapters_float32_and_exact_at_init(placement):
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        x = inputs("gpt2")
        base = out(backbone("gpt2"), x)
        keras.utils.set_random_seed(0)
        model = build_classifier(backbone("gpt2"), 3, 0.0)
        apply_peft(model, peft(placement, modules_to_save=["classifier"]), seed=0)
        inner = next(layer for layer in model.layers if isinstance(layer, keras_hub.models.Backbone))
        np.testing.assert_array_equal(out(inner, x), base)
        assert all(v.dtype == "float32" for layer in adapter_layers(model) for v in layer.adapter_variables)
        model.compile(
            optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        )
        history = model.fit(inputs("gpt2", rows=6), np.array([0, 1, 2, 1, 0, 2]), epochs=3, verbose=0).history
        assert np.isfinite(history["loss"]).all()
    finally:
        keras.config.set_dtype_policy("float32")


def test_refusals_in_one_line(tmp_path):
    with pytest.raises(InputError, match=r"^peft.quantize_base: int8 bases are for LoRA, DoRA and AdaLoRA"):
        apply_peft(backbone("bert"), peft("houlsby", quantize_base="int8"), seed=0)
    with pytest.raises(InputError, match=r"^peft.bottleneck.reduction_factor: 64 leaves no bottleneck"):
        apply_peft(backbone("bert"), PeftConfig(method="bottleneck", bottleneck={"reduction_factor": 64}), seed=0)
    model = backbone("bert")
    apply_peft(model, peft("houlsby"), seed=0)
    save_adapter(model, model, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    config["bottleneck"]["reduction_factor"] = 4
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    fresh = backbone("bert")
    with pytest.raises(InputError, match=r"^peft.adapter: layer .* is \(32, 4\) in the adapter but \(32, 8\) in the"):
        load_adapter(fresh, fresh, tmp_path, PeftConfig(), seed=0)
