"""Every adapter method x int8 base or not x precision (float32 and what `auto` picks on this backend): one
training step and one evaluation of a tiny BERT masked-LM built as `kerasboost run` builds it (adapters,
faster kernels, optimizer, jit setting), with finite outputs and the base left bitwise unchanged.

The methods come from the recipe schema, so a method added there joins the matrix without editing this file.
"""

from __future__ import annotations

import typing

import keras
import numpy as np
import pytest
from helpers import mlm_batch, tiny_bert_mlm

from kerasboost.backend import jit_compile, resolve_precision, use_precision
from kerasboost.peft.adalora import RankAllocator, adaptive_layers
from kerasboost.peft.inject import adapter_layers, apply_peft
from kerasboost.recipe import AdaLoraConfig, PeftConfig, TrainConfig
from kerasboost.runner import swap_faster_kernels
from kerasboost.train.optimizer import build_optimizer

METHODS = typing.get_args(PeftConfig.model_fields["method"].annotation)
# Bottleneck adapters refuse an int8 base (test_bottleneck.py checks the refusal).
CASES = [(method, base) for method in METHODS for base in (None, "int8") if (method, base) != ("bottleneck", "int8")]


def _precisions() -> list[str]:
    """float32 and what `auto` resolves to here (once, where the two are the same)."""
    auto = resolve_precision("auto")
    return sorted({"float32", auto.policy})


@pytest.fixture
def precision(request):
    """Sets the global dtype policy as a run with `train.precision: <param>` does; float32 again afterwards."""
    train = TrainConfig(precision=request.param, warmup_steps=0)
    use_precision(train.precision)
    yield train
    keras.config.set_dtype_policy("float32")


@pytest.mark.parametrize("precision", _precisions(), indirect=True)
@pytest.mark.parametrize("method, quantize_base", CASES)
def test_one_step_and_an_evaluation_are_finite_and_leave_the_base_frozen(method, quantize_base, precision):
    model = tiny_bert_mlm(dropout=0.1)
    apply_peft(model, PeftConfig(method=method, targets="all-linear", quantize_base=quantize_base, dropout=0.1), seed=0)
    compiled = jit_compile(precision.jit_compile)
    swap_faster_kernels(model, precision, compiled)
    adaptive = adaptive_layers(model)  # AdaLoRA: its optimizer allocates ranks after each step
    model.compile(
        optimizer=build_optimizer(precision, 2, RankAllocator(adaptive, AdaLoraConfig(), 2) if adaptive else None),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=compiled,
    )
    adapters = {id(v) for layer in adapter_layers(model) for v in layer.adapter_variables}
    assert adapters and {id(v) for v in model.trainable_variables} == adapters
    base = {v.path: keras.ops.convert_to_numpy(v).copy() for v in model.weights if id(v) not in adapters}
    before = [keras.ops.convert_to_numpy(v).copy() for layer in adapter_layers(model) for v in layer.adapter_variables]

    x, labels = mlm_batch(rows=4)
    loss = model.train_on_batch(x, labels)
    assert np.isfinite(loss), f"{method} / {quantize_base} / {precision.precision}: training loss {loss}"
    assert np.isfinite(model.test_on_batch(x, labels))
    assert np.isfinite(keras.ops.convert_to_numpy(model(x))).all()

    after = [keras.ops.convert_to_numpy(v) for layer in adapter_layers(model) for v in layer.adapter_variables]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after)), "the adapters did not train"
    for variable in model.weights:
        if id(variable) not in adapters:
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(variable), base[variable.path], err_msg=variable.path
            )
