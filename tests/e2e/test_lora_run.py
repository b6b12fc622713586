"""LoRA from recipes, once per backend: adapt a pretrained run, evaluate it, reload its adapter on the base;
merge and export every form (from TensorFlow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import BACKENDS, explain, kerasboost, overrides, python
from test_tasks import write_topics_csv

pytestmark = pytest.mark.e2e

CHECK_MERGED = """
import os, sys
from kerasboost.backend import select_backend
select_backend(os.environ["KERAS_BACKEND"])
import keras_hub
backbone = keras_hub.models.BertBackbone.from_preset(sys.argv[1])
assert not any("lora" in v.path for v in backbone.weights)
print("MERGED OK", backbone.count_params())
"""

CHECK_BASE = """
import os, sys
from kerasboost.backend import select_backend
select_backend(os.environ["KERAS_BACKEND"])
import keras_hub, numpy as np
exported, original = (keras_hub.models.BertBackbone.from_preset(path) for path in sys.argv[1:])
assert [v.path for v in exported.weights] == [v.path for v in original.weights]
assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(exported.weights, original.weights))
print("BASE OK")
"""


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("backend", BACKENDS)
def test_lora_classification_from_a_pretrained_run(backend, tmp_path):
    base = tmp_path / "base"
    process = kerasboost(
        "run",
        "recipes/mlm.yaml",
        "--output-dir",
        str(base),
        *overrides("train.steps=2", "train.eval_every=2"),
        backend=backend,
    )
    assert process.returncode == 0, explain(process)
    data = write_topics_csv(tmp_path / "topics.csv")
    run = tmp_path / "lora"
    # A barely trained base: the adapters have to do the work, which takes a higher rate than full tuning.
    settings = overrides(
        f"data.source={data}",
        f"model.preset={base}",
        "train.steps=60",
        "train.eval_every=20",
        "train.learning_rate=2e-2",
        "train.warmup_steps=4",
        "data.validation_split=0.25",
        "peft.dropout=0",
    )
    process = kerasboost("run", "recipes/lora_classify.yaml", "--output-dir", str(run), *settings, backend=backend)
    assert process.returncode == 0, explain(process)
    assert "peft: 12 layers wrapped" in process.stdout and "trainable" in process.stdout
    history = metrics(run)
    assert history[-1]["val_loss"] < history[0]["val_loss"] - 0.2, history
    assert history[-1]["val_accuracy"] > 0.5, history
    adapter_config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["method"] == "dora" and adapter_config["modules_to_save"] == ["classifier"]

    exported = kerasboost(
        "export", str(run), "--format", "adapter", "--out", str(tmp_path / "adapter"), backend=backend
    )
    assert exported.returncode == 0 and (tmp_path / "adapter" / "adapter_model.safetensors").is_file(), explain(
        exported
    )
    evaluated = kerasboost("eval", str(run / "recipe.yaml"), "--from", str(run), "--json", backend=backend)
    assert evaluated.returncode == 0, explain(evaluated)
    assert json.loads(evaluated.stdout.strip().splitlines()[-1])["accuracy"] == pytest.approx(
        history[-1]["val_accuracy"], abs=1e-6
    )

    # The saved adapter (with its trained head) on the original base gives the same metrics.
    from_adapter = kerasboost(
        "eval",
        str(run / "recipe.yaml"),
        "--from",
        str(base / "preset"),
        "--json",
        "--set",
        f"peft.adapter={tmp_path / 'adapter'}",
        backend=backend,
    )
    assert from_adapter.returncode == 0, explain(from_adapter)
    assert json.loads(from_adapter.stdout.strip().splitlines()[-1])["accuracy"] == pytest.approx(
        history[-1]["val_accuracy"], abs=1e-6
    )
    if backend != "tensorflow":
        return
    # Merging and the other exports from one backend: merges and PEFT files are tested in-process on every
    # backend (tests/backends/test_lora.py, test_peft_interop.py).
    merged = kerasboost("merge", str(run), backend=backend)
    assert merged.returncode == 0, explain(merged)
    check = python(CHECK_MERGED, backend, str(run / "export-merged"))
    assert check.returncode == 0 and "MERGED OK" in check.stdout, explain(check)
    exported = kerasboost("export", str(run), "--format", "base", "--out", str(tmp_path / "base_out"), backend=backend)
    assert exported.returncode == 0, explain(exported)
    check = python(CHECK_BASE, backend, str(tmp_path / "base_out"), str(base / "preset"))
    assert check.returncode == 0 and "BASE OK" in check.stdout, explain(check)
    hf = kerasboost("export", str(run), "--format", "peft", "--out", str(tmp_path / "hf_adapter"), backend=backend)
    assert hf.returncode == 0, explain(hf)
    assert json.loads((tmp_path / "hf_adapter" / "adapter_config.json").read_text())["use_dora"] is True
