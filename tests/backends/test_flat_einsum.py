"""Flat EinsumDense: keras-hub's attention projections as one 2-D matmul, swapped in only for TensorFlow
without XLA; the code is plain keras.ops, so it is checked against Keras' einsum on every backend."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from helpers import (
    assert_swapped_model_computes_and_trains_as_before,
    assert_swapped_only_for_tensorflow_without_xla,
    assert_weights_load_into_a_plain_model,
)

from kerasboost.models import flat_einsum
from kerasboost.models.flat_einsum import flat_contraction, flat_product, use_flat_einsums
from kerasboost.models.kernel_swap import swap_class


@pytest.mark.parametrize(
    "equation, contracted",
    [
        ("abc,cde->abde", 1),  # keras-hub's query, key and value
        ("abcd,cde->abe", 2),  # keras-hub's attention output
        ("ab,bc->ac", 1),
        ("abc,cd->abd", 1),
        ("abc,dc->abd", None),  # the kernel contracts its last axis
        ("abc,cde->adbe", None),  # outputs not batch + free
        ("abc,cde->abd", None),  # a kernel axis summed away
        ("abc,acd->abd", None),  # a batch axis in the kernel
        ("abc,bcd->ad", 2),  # two contracted axes, one batch axis
        ("abc,cd->bd", None),  # a batch axis summed away
    ],
)
def test_recognises_equations_that_are_a_flat_matmul(equation, contracted):
    assert flat_contraction(equation) == contracted


@pytest.mark.parametrize(
    "equation, inputs, kernel",
    [
        ("abc,cde->abde", (3, 5, 8), (8, 2, 4)),
        ("abcd,cde->abe", (3, 5, 2, 4), (2, 4, 8)),
        ("ab,bc->ac", (6, 8), (8, 3)),
    ],
)
def test_the_flat_product_is_the_einsum(equation, inputs, kernel):
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=inputs).astype("float32"), rng.normal(size=kernel).astype("float32")
    ours = keras.ops.convert_to_numpy(flat_product(x, w, flat_contraction(equation)))
    assert np.allclose(ours, np.einsum(equation, x, w), atol=1e-5)


def test_other_equations_and_keras_lora_fall_back_to_keras():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 8)).astype("float32")
    for layer in (
        keras.layers.EinsumDense("abc,dc->abd", output_shape=(None, 4), bias_axes="d"),
        keras.layers.EinsumDense("abc,cde->abde", output_shape=(None, 2, 4), bias_axes="de"),
    ):
        layer.build(x.shape)
        if layer.equation.endswith("abde"):
            layer.enable_lora(2)
            layer.lora_kernel_b.assign(rng.normal(size=tuple(layer.lora_kernel_b.shape)).astype("float32"))
        expected = keras.ops.convert_to_numpy(layer(x))
        layer.__class__ = flat_einsum.EinsumDense
        assert np.allclose(keras.ops.convert_to_numpy(layer(x)), expected, atol=1e-6)


def test_swaps_the_projections_only_for_tensorflow_without_xla():
    """Eight: query, key, value and output in each of two layers."""
    assert_swapped_only_for_tensorflow_without_xla(
        use_flat_einsums, keras.layers.EinsumDense, flat_einsum.EinsumDense, 8
    )


def test_a_model_with_flat_projections_computes_and_trains_as_before():
    assert_swapped_model_computes_and_trains_as_before(keras.layers.EinsumDense, flat_einsum.EinsumDense, 8)


def test_weights_saved_with_flat_projections_load_into_a_plain_model(tmp_path):
    assert_weights_load_into_a_plain_model(
        lambda model: swap_class(model, keras.layers.EinsumDense, flat_einsum.EinsumDense), tmp_path
    )
