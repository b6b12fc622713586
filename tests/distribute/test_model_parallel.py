"""JAX model parallel on a 2 x 2 mesh: the Megatron layout really shards the kernels, adapters stay
replicated, and training follows the single-device curve, with and without LoRA."""

from __future__ import annotations

import keras_hub
import pytest
from runs import assert_same_curve, recipe, train

from kerasboost import distribute
from kerasboost.errors import InputError
from kerasboost.models.backbone import build_backbone
from kerasboost.models.mlm import build_mlm_model
from kerasboost.peft.inject import apply_peft

MODEL_PARALLEL = ("distribution.strategy=model_parallel", "distribution.mesh.model=2")


def spec(variable) -> tuple:
    """The variable's PartitionSpec, padded to its rank."""
    axes = tuple(variable.value.sharding.spec)
    return axes + (None,) * (len(variable.shape) - len(axes))


def test_layout_shards_bert_kernels_and_replicates_adapters():
    lora = recipe("lora_mlm", *MODEL_PARALLEL, "peft.targets=all-linear")
    distributed = distribute.setup(lora.distribution, lora.train, lora.model.backbone, "jax")
    try:
        model = build_mlm_model(build_backbone(lora.model, 1000))
        apply_peft(model, lora.peft, seed=0)
        layout = {variable.path: spec(variable) for variable in model.variables}
        assert all(len(variable.value.sharding.device_set) == 4 for variable in model.variables)
    finally:
        distributed.close()
    block = "transformer_layer_1/self_attention_layer"
    assert layout[f"{block}/query/kernel"] == (None, "model", None)
    assert layout[f"{block}/value/bias"] == ("model", None)
    assert layout[f"{block}/attention_output/kernel"] == ("model", None, None)
    assert layout["transformer_layer_0/feedforward_intermediate_dense/kernel"] == (None, "model")
    assert layout["transformer_layer_0/feedforward_output_dense/kernel"] == ("model", None)
    assert layout["token_embedding/embeddings"] == (None, "model")
    assert layout["transformer_layer_0/feedforward_output_dense/bias"] == (None,)
    assert layout["embeddings_layer_norm/gamma"] == (None,)
    adapters = {path: axes for path, axes in layout.items() if "lora_" in path}
    assert len(adapters) == 2 * 6 * 2  # A and B, six projections, two layers
    assert all(axis is None for axes in adapters.values() for axis in axes), adapters


def test_layout_shards_gpt2_the_same_way():
    gpt2 = recipe("gpt2_clm", *MODEL_PARALLEL)
    distributed = distribute.setup(gpt2.distribution, gpt2.train, gpt2.model.backbone, "jax")
    try:
        backbone = build_backbone(gpt2.model, 1000)
        assert isinstance(backbone, keras_hub.models.GPT2Backbone)
        layout = {variable.path: spec(variable) for variable in backbone.variables}
    finally:
        distributed.close()
    assert layout["transformer_layer_0/self_attention/key/kernel"] == (None, "model", None)
    assert layout["transformer_layer_1/self_attention/attention_output/kernel"] == ("model", None, None)
    assert layout["transformer_layer_1/feedforward_intermediate_dense/bias"] == ("model",)
    assert layout["layer_norm/gamma"] == (None,)


def test_model_parallel_follows_the_single_device_curve(single_device, tmp_path, capsys):
    sharded = train(tmp_path / "sharded", "mlm", *MODEL_PARALLEL)
    printed = capsys.readouterr().out
    assert "mesh batch=2 x model=2 · 4 cpu devices" in printed and "per replica 8" in printed, printed
    assert "21 of 44 variables sharded over 'model'" in printed, printed
    assert_same_curve(single_device, sharded)


def test_lora_under_model_parallel_follows_the_single_device_curve(tmp_path):
    lora = ("peft.dropout=0", "train.learning_rate=1e-2")
    single = train(tmp_path / "single", "lora_mlm", *lora)
    sharded = train(tmp_path / "sharded", "lora_mlm", *lora, *MODEL_PARALLEL)
    assert_same_curve(single, sharded)


@pytest.mark.parametrize(
    "pairs, message",
    [
        (
            ("distribution.strategy=data_parallel", "train.batch_size=18"),
            "train.batch_size: the global batch 18 does not divide over 4 replicas",
        ),
        (
            ("distribution.strategy=data_parallel", "distribution.mesh.batch=8"),
            "xla_force_host_platform_device_count=8",
        ),
        ((*MODEL_PARALLEL, "distribution.mesh.batch=4"), "distribution.mesh: 4 x 2 needs 8 devices, jax sees 4"),
    ],
)
def test_impossible_meshes_are_input_errors(pairs, message):
    with pytest.raises(InputError, match=message.replace(".", r"\.")):
        mlm = recipe("mlm", *pairs)
        distribute.setup(mlm.distribution, mlm.train, mlm.model.backbone, "jax")
