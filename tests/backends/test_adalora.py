"""AdaLoRA: outputs unchanged at init, only the adapters train, the budget follows PEFT's schedule and masks
the lowest-importance triplets, and Hugging Face PEFT's AdaLoRA adapters round-trip both ways (the
Hugging Face side runs on PyTorch)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import keras
import numpy as np
import pytest
from test_peft_interop import VOCAB, hf_model, hf_output, our_model, our_output

from kerasboost.errors import InputError
from kerasboost.models.backbone import build_backbone
from kerasboost.peft.adalora import AdaLoraLayer, RankAllocator, adaptive_layers, budget_schedule
from kerasboost.peft.hf_format import export_peft, import_peft
from kerasboost.peft.inject import apply_peft
from kerasboost.recipe import AdaLoraConfig, ModelConfig, PeftConfig, TrainConfig
from kerasboost.train.optimizer import build_optimizer

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

CONFIG = dict(num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64, dropout=0.0, max_sequence_length=32)
SCHEDULE = AdaLoraConfig(init_rank=4, target_rank=2, tinit=2, tfinal=3, delta_t=2)
STEPS = 12


def classifier(seed=0):
    """A tiny BERT with a 2-way head on its pooled output."""
    keras.utils.set_random_seed(seed)
    backbone = build_backbone(ModelConfig(backbone="bert", config=CONFIG), VOCAB)
    inputs = {
        name: keras.Input((16,), dtype="int32", name=name) for name in ("token_ids", "segment_ids", "padding_mask")
    }
    logits = keras.layers.Dense(2, name="classifier")(backbone(inputs)["pooled_output"])
    return keras.Model(inputs, logits)


def batch(rows=32, seed=0):
    rng = np.random.default_rng(seed)
    x = {
        "token_ids": rng.integers(0, VOCAB, (rows, 16)).astype("int32"),
        "segment_ids": np.zeros((rows, 16), "int32"),
        "padding_mask": np.ones((rows, 16), "int32"),
    }
    return x, rng.integers(0, 2, (rows,))


def adalora(model, schedule=SCHEDULE):
    return apply_peft(
        model,
        PeftConfig(method="adalora", alpha=8, targets="all-linear", adalora=schedule, modules_to_save=["classifier"]),
        0,
    )


def test_outputs_are_unchanged_at_init():
    model = classifier()
    x, _ = batch()
    before = keras.ops.convert_to_numpy(model(x))
    adalora(model)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x)), before)
    assert len(adaptive_layers(model)) == 12 and all(
        isinstance(layer, AdaLoraLayer) for layer in adaptive_layers(model)
    )


class RankTrace(keras.callbacks.Callback):
    """The total allocated rank after every step (`self.model` syncs JAX's state first)."""

    def __init__(self):
        super().__init__()
        self.totals = []

    def on_train_batch_end(self, batch, logs=None):
        self.totals.append(sum(self.model.optimizer.rank_allocator.ranks().values()))


@pytest.fixture(scope="module")
def trained():
    model = classifier()
    adalora(model)
    frozen = {v.path: keras.ops.convert_to_numpy(v) for v in model.weights if not v.trainable}
    start = {v.path: keras.ops.convert_to_numpy(v) for v in model.trainable_weights}
    allocator = RankAllocator(adaptive_layers(model), SCHEDULE, STEPS)
    model.compile(
        optimizer=build_optimizer(TrainConfig(learning_rate=1e-2, steps=STEPS), STEPS, allocator),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        steps_per_execution=1,
    )
    trace = RankTrace()
    x, y = batch()
    model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0, callbacks=[trace])
    return model, allocator, frozen, start, trace.totals


def test_training_moves_only_the_adapters_and_the_saved_head(trained):
    model, _, frozen, start, _ = trained
    for variable in model.weights:
        if variable.path in frozen and not variable.path.endswith("rank_mask"):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), frozen[variable.path], variable.path)
    moved = {path for path, value in start.items() if not np.array_equal(value, _value(model, path))}
    assert any("lora_e" in path for path in moved) and any("lora_a" in path for path in moved)
    assert any(path.startswith("classifier/") for path in moved)


def _value(model, path):
    return next(keras.ops.convert_to_numpy(v) for v in model.weights if v.path == path)


def test_the_total_rank_follows_the_schedule(trained):
    _, allocator, _, _, totals = trained
    budgets, allocates = budget_schedule(SCHEDULE, STEPS, 12)
    assert budgets.tolist() == [48, 48, 48, 39, 32, 28, 25, 24, 24, 24, 24, 24]
    assert np.flatnonzero(allocates).tolist() == [4, 6, 8, 9]  # every delta_t after tinit, and T - tfinal
    expected, total = [], 48
    for step in range(STEPS):
        total = budgets[step] if allocates[step] else total
        expected.append(total)
    assert totals == expected


def test_the_lowest_importance_triplets_are_masked(trained):
    model, allocator, _, _, _ = trained
    kept, dropped = [], []
    for layer, pairs, mask in zip(allocator.layers, allocator.importance, allocator.masks):
        score = {name: keras.ops.convert_to_numpy(s) * keras.ops.convert_to_numpy(u) for name, (s, u) in pairs.items()}
        triplets = score["e"] + score["a"].mean(axis=0) + score["b"].mean(axis=1)
        mask = keras.ops.convert_to_numpy(mask) > 0
        kept += triplets[mask].tolist()
        dropped += triplets[~mask].tolist()
        # After T - tfinal the last mask is applied at every step: masked singular values are exactly 0.
        assert not np.any(keras.ops.convert_to_numpy(layer.adapter_e)[~mask])
    assert len(kept) == 24 and max(dropped) < min(kept)


@pytest.mark.parametrize(
    "tinit, tfinal, delta_t, total", [(0, 0, 1, 100), (10, 20, 3, 100), (5, 0, 7, 60), (0, 30, 1, 31)]
)
def test_the_schedule_is_peft_s(tinit, tfinal, delta_t, total):
    from peft.tuners.adalora.layer import RankAllocator as PeftAllocator

    settings = AdaLoraConfig(init_rank=12, target_rank=8, tinit=tinit, tfinal=tfinal, delta_t=delta_t)
    budgets, allocates = budget_schedule(settings, total, 24)
    config = SimpleNamespace(tinit=tinit, tfinal=tfinal, total_step=total, deltaT=delta_t)
    theirs = SimpleNamespace(peft_config=config, init_bgt=12 * 24, target_bgt=8 * 24)
    for step in range(total):
        budget, mask = PeftAllocator.budget_schedule(theirs, step)
        assert budgets[step] == budget, step
        # update_and_allocate: an allocation at T - tfinal, none after it (the final mask is re-applied)
        assert allocates[step] == (step == total - tfinal or (mask and step < total - tfinal)), step


def test_too_few_steps_for_the_schedule_is_an_input_error():
    model = classifier()
    adalora(model, AdaLoraConfig(init_rank=4, target_rank=2, tinit=6, tfinal=6))
    with pytest.raises(InputError, match=r"peft.adalora: tinit \(6\) and tfinal \(6\) leave no step"):
        RankAllocator(adaptive_layers(model), SCHEDULE.model_copy(update={"tinit": 6, "tfinal": 6}), 12)


def test_checkpoints_hold_the_allocation(trained, tmp_path):
    """Importance EMAs and masks are optimizer variables: they are in the weights file with the slots."""
    model, allocator, _, _, _ = trained
    model.save_weights(tmp_path / "model.weights.h5")
    again = classifier(seed=1)
    adalora(again)
    twin = RankAllocator(adaptive_layers(again), SCHEDULE, STEPS)
    again.compile(optimizer=build_optimizer(TrainConfig(learning_rate=1e-2, steps=STEPS), STEPS, twin), loss="mse")
    again.optimizer.build(again.trainable_variables)
    again.load_weights(tmp_path / "model.weights.h5")
    assert twin.ranks() == allocator.ranks()
    for ours, theirs in zip(allocator.importance, twin.importance):
        for name in ours:
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(ours[name][0]), keras.ops.convert_to_numpy(theirs[name][0])
            )


# --- Hugging Face PEFT ---------------------------------------------------------------------------


MODULES = {"bert": ["query", "value", "intermediate.dense"], "gpt2": ["c_proj", "c_fc"]}
TARGETS = {"bert": ["query", "value", "intermediate"], "gpt2": ["attention_output", "intermediate", "output"]}


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_a_peft_adalora_adapter_gives_peft_s_outputs_here(tmp_path, kind):
    """PEFT trains with its own allocator (rank_pattern masks some triplets), saves; we load it."""
    hf = hf_model(kind, tmp_path / "base")
    config = peft.AdaLoraConfig(
        init_r=4,
        target_r=2,
        tinit=1,
        tfinal=2,
        deltaT=1,
        total_step=8,
        lora_alpha=8,
        target_modules=MODULES[kind],
        fan_in_fan_out=kind == "gpt2",
    )
    adapted = peft.get_peft_model(hf, config)
    optimizer = torch.optim.AdamW([p for p in adapted.parameters() if p.requires_grad], lr=5e-2)
    ids = torch.tensor(np.random.default_rng(0).integers(0, VOCAB, (4, 8)), dtype=torch.long)
    for step in range(8):
        output = adapted(input_ids=ids, output_hidden_states=True)
        loss = (output.logits if kind == "gpt2" else output.hidden_states[-1]).square().mean()
        loss.backward()
        optimizer.step()
        adapted.base_model.update_and_allocate(step)
        optimizer.zero_grad()
    with torch.no_grad():  # trained-looking P and Q (masked singular values stay 0)
        for name, parameter in adapted.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                parameter.add_(torch.randn_like(parameter) * 0.3)
            if "lora_E" in name:
                parameter.add_(torch.randn_like(parameter) * (parameter != 0))
    adapted.save_pretrained(tmp_path / "adapter")
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["rank_pattern"] and not all(all(kept) for kept in saved["rank_pattern"].values())
    theirs = hf_output(
        peft.PeftModel.from_pretrained(hf_model(kind, tmp_path / "base2"), str(tmp_path / "adapter")).eval(), kind
    )
    assert not np.allclose(theirs, hf_output(hf_model(kind, tmp_path / "again"), kind), atol=1e-4), "it must matter"
    backbone, model = our_model(kind, tmp_path / "base")
    report = import_peft(backbone, backbone, tmp_path / "adapter", PeftConfig(), seed=0)
    assert {layer.adapter_rank for layer in adaptive_layers(backbone)} == {4}, report
    np.testing.assert_allclose(our_output(model, kind), theirs, atol=1e-4)


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_our_adalora_adapter_gives_our_outputs_in_peft(tmp_path, kind):
    hf = hf_model(kind, tmp_path / "base")
    backbone, model = our_model(kind, tmp_path / "base")
    apply_peft(backbone, PeftConfig(method="adalora", alpha=8, targets=TARGETS[kind], adalora=SCHEDULE), seed=0)
    rng = np.random.default_rng(0)
    for layer in adaptive_layers(backbone):  # trained-looking: singular values, some triplets masked
        mask = (rng.random(layer.adapter_rank) > 0.4).astype("float32")
        mask[0] = 1.0
        layer.rank_mask.assign(mask)
        layer.adapter_e.assign(rng.normal(0, 0.5, layer.adapter_rank).astype("float32") * mask)
    expected = our_output(model, kind)
    export_peft(backbone, backbone, tmp_path / "adapter", adalora=SCHEDULE, total_steps=STEPS)
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "ADALORA" and config["init_r"] == 4 and config["total_step"] == STEPS
    adapted = peft.PeftModel.from_pretrained(hf, str(tmp_path / "adapter")).eval()
    np.testing.assert_allclose(hf_output(adapted, kind), expected, atol=1e-4)
    assert not np.allclose(expected, hf_output(hf_model(kind, tmp_path / "again"), kind), atol=1e-4)


def test_adalora_on_gpt2_s_fused_attention_has_no_peft_form(tmp_path):
    hf_model("gpt2", tmp_path / "base")
    backbone, _ = our_model("gpt2", tmp_path / "base")
    apply_peft(backbone, PeftConfig(method="adalora", targets=["query", "value"], adalora=SCHEDULE), seed=0)
    with pytest.raises(InputError, match=r"AdaLoRA on GPT-2's query has no PEFT counterpart"):
        export_peft(backbone, backbone, tmp_path / "adapter", adalora=SCHEDULE, total_steps=STEPS)


def test_the_orthogonality_regulariser_is_in_the_training_loss_only():
    """orth_reg_weight x the mean of ||P^T P - I||_F and ||Q Q^T - I||_F over every P and Q (PEFT's rule)."""
    model = classifier()
    adalora(model)
    x, _ = batch(rows=2)
    model(x, training=True)
    norms = []
    for layer in adaptive_layers(model):
        p, q = keras.ops.convert_to_numpy(layer.adapter_a), keras.ops.convert_to_numpy(layer.adapter_b)
        norms += [np.linalg.norm(p.T @ p - np.eye(4)), np.linalg.norm(q @ q.T - np.eye(4))]
    added = sum(float(keras.ops.convert_to_numpy(loss)) for loss in model.losses)
    np.testing.assert_allclose(added, SCHEDULE.orth_reg_weight * np.mean(norms), rtol=1e-5)
    model(x, training=False)
    assert not model.losses


def test_adapter_files_keep_the_allocation(trained, tmp_path):
    """Our adapter files hold P, E, Q and each layer's mask; loading them gives the same outputs."""
    from kerasboost.peft.adapter import load_adapter, save_adapter

    model, allocator, _, _, _ = trained
    allocator.mirror()
    save_adapter(model, model.layers[3], tmp_path / "adapter", ["classifier"])
    again = classifier(seed=0)
    load_adapter(again, again.layers[3], tmp_path / "adapter", PeftConfig(adalora=SCHEDULE), seed=3)
    x, _ = batch(rows=4)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(again(x)), keras.ops.convert_to_numpy(model(x)))
    masks = [keras.ops.convert_to_numpy(layer.rank_mask) for layer in adaptive_layers(again)]
    assert sum(int(mask.sum()) for mask in masks) == 24
