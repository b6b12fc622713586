"""Bottleneck adapters from a recipe, once per backend: a classification run with a checkpoint, resumed to more
steps, evaluated and used; from TensorFlow, exported as adapter files, as the frozen base and as a SavedModel,
and refused as a merged preset."""

from __future__ import annotations

import json

import pytest
from helpers import BACKENDS, explain, kerasboost, overrides, python
from test_tasks import write_topics_csv

pytestmark = pytest.mark.e2e

# The SavedModel holds the adapters: it computes what the run's Keras model (adapters added, checkpoint loaded) does.
CHECK_SAVED_MODEL = """
import sys
from kerasboost.backend import select_backend
select_backend("tensorflow")
import numpy as np, tensorflow as tf
from kerasboost.runner import load_trained
model = load_trained(sys.argv[1]).task.model
saved = tf.saved_model.load(sys.argv[2])
ids = np.random.default_rng(0).integers(5, 50, (2, 32)).astype("int32")
x = {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": np.ones_like(ids)}
ours, theirs = model(x).numpy(), saved.serve({key: tf.constant(value) for key, value in x.items()}).numpy()
assert np.allclose(ours, theirs, atol=1e-5), (ours, theirs)
print("SAVED MODEL OK")
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_bottleneck_classification_resumes_and_exports(backend, tmp_path):
    data = write_topics_csv(tmp_path / "topics.csv")
    run = tmp_path / "run"
    settings = [
        f"data.source={data}",
        "data.validation_split=0.25",
        "peft.method=bottleneck",
        "peft.bottleneck.placement=parallel",
        "peft.bottleneck.reduction_factor=8",
        "peft.bottleneck.scaling=4.0",
        "train.eval_every=2",
        "checkpoint.every_steps=2",
    ]
    first = kerasboost(
        "run",
        "recipes/lora_classify.yaml",
        "--output-dir",
        str(run),
        *overrides(*settings, "train.steps=2"),
        backend=backend,
    )
    assert first.returncode == 0, explain(first)
    assert "peft: 4 layers wrapped" in first.stdout, explain(first)
    assert "preset: none (bottleneck adapters cannot be merged" in first.stdout, explain(first)
    assert not (run / "preset").exists()
    adapter_config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["method"] == "bottleneck" and adapter_config["bottleneck"]["placement"] == "parallel"
    assert adapter_config["modules_to_save"] == ["classifier"]

    resumed = kerasboost(
        "run",
        "recipes/lora_classify.yaml",
        "--resume",
        "--output-dir",
        str(run),
        *overrides(*settings, "train.steps=4"),
        backend=backend,
    )
    assert resumed.returncode == 0, explain(resumed)
    assert "at step 2" in resumed.stdout, explain(resumed)
    assert sorted(p.name for p in (run / "checkpoints").iterdir())[-1] == "step-00000004"

    evaluated = kerasboost("eval", str(run), "--json", backend=backend)
    assert evaluated.returncode == 0, explain(evaluated)
    assert "accuracy" in json.loads(evaluated.stdout.strip().splitlines()[-1])
    predicted = kerasboost("predict", str(run), "--text", "the cat of the tree", backend=backend)
    assert predicted.returncode == 0 and '"label"' in predicted.stdout, explain(predicted)

    if backend != "tensorflow":
        return
    # Exports from one backend: the adapter file and the refusals are tested in-process on every backend
    # (tests/backends/test_bottleneck.py); the SavedModel needs TensorFlow.
    adapter = kerasboost("export", str(run), "--format", "adapter", "--out", str(tmp_path / "adapter"), backend=backend)
    assert adapter.returncode == 0 and (tmp_path / "adapter" / "adapter_model.safetensors").is_file(), explain(adapter)
    base = kerasboost("export", str(run), "--format", "base", "--out", str(tmp_path / "base"), backend=backend)
    assert base.returncode == 0 and (tmp_path / "base" / "config.json").is_file(), explain(base)
    preset = kerasboost("export", str(run), "--format", "preset", "--out", str(tmp_path / "preset"), backend=backend)
    assert preset.returncode == 2, explain(preset)
    assert preset.stderr.strip().splitlines() == [
        "error: export --format preset: bottleneck adapters: they cannot be merged into the base weights; use "
        "export --format adapter (the adapters alone) or --format saved_model (the whole model, adapters included)"
    ], explain(preset)
    assert not (tmp_path / "preset").exists()
    saved = kerasboost("export", str(run), "--format", "saved_model", "--out", str(tmp_path / "saved"), backend=backend)
    assert saved.returncode == 0, explain(saved)
    check = python(CHECK_SAVED_MODEL, backend, str(run), str(tmp_path / "saved"))
    assert check.returncode == 0 and "SAVED MODEL OK" in check.stdout, explain(check)
