"""TensorFlow only (collected under that backend): FusedAdamW, TensorFlow's one-pass Adam kernel, leaves
weights and optimizer state as Keras' AdamW leaves them on dense gradients (as JAX and PyTorch train),
with clipping, weight decay and its exclusions, an embedding's sparse gradient, accumulation and XLA."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasboost.recipe import TrainConfig
from kerasboost.train.fused_adamw import FusedAdamW
from kerasboost.train.optimizer import NO_WEIGHT_DECAY, build_optimizer


class DenseGradientAdamW(keras.optimizers.AdamW):
    """The reference: Keras' AdamW, handed the embedding's gradient summed (as JAX and PyTorch compute it)."""

    def apply(self, grads, trainable_variables=None):
        return super().apply(
            [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads], trainable_variables
        )


def _model() -> keras.Model:
    """An embedding (a sparse gradient, its rows repeated), a kernel, biases and a LayerNorm (decayed and excluded)."""
    tokens = keras.Input((6,), dtype="int32")
    hidden = keras.layers.Embedding(50, 8)(tokens)
    hidden = keras.layers.LayerNormalization()(keras.layers.Dense(8, activation="tanh")(hidden))
    model = keras.Model(tokens, keras.layers.Dense(50)(hidden))
    model.set_weights(
        [
            np.random.default_rng(index).normal(0, 0.3, w.shape).astype("float32")
            for index, w in enumerate(model.get_weights())
        ]
    )
    return model


def _train(optimizer_class, clip_norm, accumulate: int, jit_compile: bool = False):
    """Twelve micro-batches of `fit` (graph mode unless `jit_compile`); the weights and the optimizer's variables."""
    model = _model()
    optimizer = build_optimizer(
        TrainConfig(
            batch_size=12,
            learning_rate=0.05,
            warmup_steps=2,
            weight_decay=0.1,
            clip_norm=clip_norm,
            gradient_accumulation=accumulate,
        ),
        12,
    )
    assert type(optimizer) is FusedAdamW
    if optimizer_class is not FusedAdamW:
        optimizer = optimizer_class.from_config(optimizer.get_config())
        optimizer.exclude_from_weight_decay(var_names=[NO_WEIGHT_DECAY])  # not part of an optimizer's config
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
        steps_per_execution=3,
    )
    tokens = np.random.default_rng(1).integers(0, 50, (48, 6)).astype("int32")
    model.fit(tokens, np.roll(tokens, 1, axis=1), batch_size=4, epochs=1, shuffle=False, verbose=0)
    return model.get_weights() + [keras.ops.convert_to_numpy(v) for v in optimizer.variables]


@pytest.mark.parametrize(
    ("clip_norm", "accumulate"),
    [(None, 1), (0.05, 1), (1e6, 1), (0.05, 3)],
    ids=["no clip", "clipped", "under the threshold", "accumulated"],
)
def test_fused_update_matches_keras_adamw(clip_norm, accumulate):
    fused, reference = _train(FusedAdamW, clip_norm, accumulate), _train(DenseGradientAdamW, clip_norm, accumulate)
    assert len(fused) == len(reference)
    for ours, theirs in zip(fused, reference):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)  # float32 round-off of 12 steps at lr 0.05
    initial = _model().get_weights()
    assert all(not np.allclose(after, before) for after, before in zip(fused, initial)), "a variable did not train"


def test_under_xla_too():
    np.testing.assert_allclose(
        np.concatenate([w.ravel() for w in _train(FusedAdamW, 0.05, 1, jit_compile=True)]),
        np.concatenate([w.ravel() for w in _train(FusedAdamW, 0.05, 1)]),
        rtol=1e-5,
        atol=1e-6,
    )


def test_repeated_embedding_rows_are_summed_before_adam():
    """Adam's first step moves every touched weight by the learning rate (m̂/√v̂ = ±1). Keras' AdamW, handed a
    row repeated twice in an IndexedSlices, squares the repeats separately and moves it √2 times as far."""
    gradient = tf.IndexedSlices(tf.ones((3, 2)), tf.constant([0, 0, 1]), tf.constant([3, 2]))
    moved = {}
    for optimizer_class in (FusedAdamW, keras.optimizers.AdamW):
        variable = keras.Variable(np.zeros((3, 2), "float32"))
        optimizer_class(learning_rate=0.1, weight_decay=0.0).apply([gradient], [variable])
        moved[optimizer_class] = -keras.ops.convert_to_numpy(variable)
    np.testing.assert_allclose(moved[FusedAdamW], [[0.1, 0.1], [0.1, 0.1], [0, 0]], rtol=1e-4)
    np.testing.assert_allclose(moved[keras.optimizers.AdamW][0], [0.1 * np.sqrt(2)] * 2, rtol=1e-4)


def test_checkpoints_load_into_keras_adamw(tmp_path):
    """The optimizer's state is saved under the same keys as Keras' AdamW's: a run resumes on any backend."""
    model = _model()
    model.compile(
        optimizer=build_optimizer(TrainConfig(batch_size=4), 10),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    tokens = np.random.default_rng(1).integers(0, 50, (8, 6)).astype("int32")
    model.fit(tokens, tokens, batch_size=4, verbose=0)
    model.save_weights(str(tmp_path / "fused.weights.h5"))
    plain = _model()
    plain.compile(optimizer=keras.optimizers.AdamW.from_config(model.optimizer.get_config()), loss="mse")
    plain.optimizer.build(plain.trainable_variables)
    plain.load_weights(str(tmp_path / "fused.weights.h5"))
    assert int(plain.optimizer.iterations) == 2
    for saved, loaded in zip(model.optimizer.variables, plain.optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded), keras.ops.convert_to_numpy(saved))
