"""The `auto` speed settings: precision (mixed_bfloat16 where the backend computes bfloat16 natively, else
float32), jit_compile (Keras' choice, except TensorFlow on CPU: its graph kernels beat XLA there) and
kernels (kerasboost's where measured faster, or Keras' own)."""

from __future__ import annotations

import keras
import pytest
from helpers import tiny_bert_mlm
from pydantic import ValidationError

from kerasboost import backend
from kerasboost.errors import InputError
from kerasboost.recipe import Recipe, TrainConfig
from kerasboost.runner import swap_faster_kernels
from kerasboost.train.fused_adamw import FusedAdamW
from kerasboost.train.optimizer import build_optimizer


@pytest.fixture(autouse=True)
def restore_policy():
    yield
    keras.config.set_dtype_policy("float32")


@pytest.mark.parametrize("cpu_unit", ["CPU with AVX512-BF16", None])
def test_auto_follows_the_hardware(monkeypatch, cpu_unit):
    monkeypatch.setattr(backend, "_cpu_bfloat16_unit", lambda: cpu_unit)
    train = TrainConfig()
    precision = backend.use_precision(train.precision)
    # No accelerator here: the CPU decides, except under JAX, whose XLA CPU backend emulates bfloat16.
    native = cpu_unit is not None and keras.backend.backend() != "jax"
    assert precision.policy == ("mixed_bfloat16" if native else "float32")
    assert keras.config.dtype_policy().name == precision.policy
    shown = str(precision)
    assert shown.startswith(precision.policy + " (auto: ") and (
        cpu_unit in shown if native else "no native bfloat16" in shown
    )
    assert train.precision == "auto"  # resolved into a value, the recipe left as it was


def test_an_explicit_precision_is_kept():
    assert str(backend.use_precision("float32")) == "float32"


def test_a_recipe_cannot_be_changed_once_loaded():
    train = TrainConfig()
    with pytest.raises(ValidationError, match="frozen"):
        train.precision = "float32"


def test_auto_jit_compile_leaves_xla_to_keras_except_tensorflow_on_cpu():
    # This machine has no GPU or TPU (the suite runs on CPUs).
    assert backend.jit_compile("auto") == (False if keras.backend.backend() == "tensorflow" else "auto")
    assert backend.jit_compile(True) is True and backend.jit_compile(False) is False


@pytest.mark.parametrize("kernels", ["auto", "keras"])
def test_kernels_keras_keeps_every_layer_and_the_optimizer_keras_own(kernels):
    """`train.kernels: auto` gives the model kerasboost's kernels where measured faster (PackedDropout on
    every backend, the rest on TensorFlow in graph mode); `keras` leaves the model and AdamW as Keras has them."""
    model = tiny_bert_mlm(dropout=0.1)
    classes = [type(layer) for layer in model._flatten_layers()]
    train = TrainConfig(kernels=kernels)
    swapped = swap_faster_kernels(model, train, compiled=backend.jit_compile(train.jit_compile))
    tensorflow = keras.backend.backend() == "tensorflow"
    if kernels == "keras":
        assert swapped == {} and [type(layer) for layer in model._flatten_layers()] == classes
        optimizer = build_optimizer(train, 10)
        assert isinstance(optimizer, keras.optimizers.AdamW) and not isinstance(optimizer, FusedAdamW)
        return
    expected = {
        "dropout layers use PackedDropout": 7,
        "GELUs run as XLA kernels": 3,  # two feed-forward layers and the MLM head's
        "layer norms use a closed-form gradient": 6,
        "attention projections run as one matmul": 8,
        "attention softmaxes add their mask": 2,
    }
    assert swapped == {
        what: count if tensorflow or what.startswith("dropout") else 0 for what, count in expected.items()
    }
    assert isinstance(build_optimizer(train, 10), FusedAdamW) == tensorflow


def test_one_step_per_call_where_the_engine_runs_no_more():
    """TensorFlow's MirroredStrategy with several replicas (distribute.tensorflow) runs one step per call:
    `auto` gives 1 there, an explicit larger value is a one-line error (PyTorch always runs one)."""
    auto = Recipe(train={"eval_every": 10})
    auto = auto.train, auto.logging.every_steps
    assert backend.steps_per_execution(*auto, several_per_call=False) == 1
    assert backend.steps_per_execution(*auto) == (1 if keras.backend.backend() == "torch" else 10)
    explicit = Recipe(train={"eval_every": 10, "steps_per_execution": 5})
    explicit = explicit.train, explicit.logging.every_steps
    if keras.backend.backend() == "torch":
        assert backend.steps_per_execution(*explicit, several_per_call=False) == 1
    else:
        with pytest.raises(InputError, match="train.steps_per_execution: 5 steps per call fail under"):
            backend.steps_per_execution(*explicit, several_per_call=False)
