"""Our next-sentence head: shape, serialisation inside a saved model, gradients into the backbone."""

from __future__ import annotations

import keras
import numpy as np

from kerasboost.models.backbone import build_backbone
from kerasboost.models.heads import NextSentenceHead
from kerasboost.models.mlm import build_mlm_model
from kerasboost.recipe import ModelConfig

CONFIG = ModelConfig(
    config=dict(num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64, dropout=0.0, max_sequence_length=16)
)


def inputs(rows=3, length=10):
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 200, (rows, length)).astype("int32")
    return {
        "token_ids": ids,
        "segment_ids": np.concatenate([np.zeros((rows, 5)), np.ones((rows, 5))], axis=1).astype("int32"),
        "padding_mask": np.ones_like(ids),
        "mask_positions": np.tile(np.arange(3, dtype="int32"), (rows, 1)),
    }


def test_output_shape_and_float32_logits():
    head = NextSentenceHead()
    logits = head(keras.ops.ones((4, 32)))
    assert tuple(logits.shape) == (4, 2)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert NextSentenceHead.from_config(head.get_config()).get_config() == head.get_config()


def test_saved_and_reloaded_inside_a_keras_model(tmp_path):
    keras.utils.set_random_seed(0)
    backbone = build_backbone(CONFIG, 200)
    x = {k: v for k, v in inputs().items() if k != "mask_positions"}
    model_inputs = {name: keras.Input(shape=(None,), dtype="int32", name=name) for name in x}
    model = keras.Model(model_inputs, NextSentenceHead(name="nsp_head")(backbone(model_inputs)["pooled_output"]))
    expected = keras.ops.convert_to_numpy(model(x))
    path = tmp_path / "nsp.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored.get_layer("nsp_head"), NextSentenceHead)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored(x)), expected, atol=1e-6)


def test_pretraining_model_weights_round_trip(tmp_path):
    """The checkpoint format: weights saved from one model load into a freshly built one."""
    keras.utils.set_random_seed(0)
    model = build_mlm_model(build_backbone(CONFIG, 200), next_sentence=True)
    x = inputs()
    expected = model(x)
    model.save_weights(tmp_path / "model.weights.h5")
    keras.utils.set_random_seed(1)
    restored = build_mlm_model(build_backbone(CONFIG, 200), next_sentence=True)
    restored.load_weights(tmp_path / "model.weights.h5")
    actual = restored(x)
    for key in ("mlm", "nsp"):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(actual[key]), keras.ops.convert_to_numpy(expected[key]), atol=1e-6
        )


def test_nsp_loss_trains_the_backbone():
    keras.utils.set_random_seed(0)
    backbone = build_backbone(CONFIG, 200)
    model = build_mlm_model(backbone, next_sentence=True)
    nsp_only = keras.Model(model.input, model.output["nsp"])
    nsp_only.compile(
        optimizer=keras.optimizers.SGD(0.5), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    before = {v.path: keras.ops.convert_to_numpy(v).copy() for v in backbone.trainable_variables}
    nsp_only.fit(inputs(rows=8), np.array([0, 1] * 4), epochs=1, verbose=0)
    moved = [
        path
        for path, value in before.items()
        if not np.allclose(
            value, keras.ops.convert_to_numpy(next(v for v in backbone.trainable_variables if v.path == path))
        )
    ]
    assert any("pooled_dense" in path for path in moved)
    assert any("transformer_layer_0" in path for path in moved), "the NSP gradient must reach the encoder"
