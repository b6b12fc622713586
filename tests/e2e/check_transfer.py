"""Run on one backend: a classifier built from a pretraining run starts from that run's exported backbone.

Usage: python tests/e2e/check_transfer.py PRETRAIN_RUN CLASSIFY_RECIPE DATA_CSV   (KERAS_BACKEND chooses)
"""

import os
import sys
import tempfile
from pathlib import Path

from kerasboost.backend import select_backend

select_backend(os.environ["KERAS_BACKEND"])

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402

from kerasboost.data.prepare import prepare_data  # noqa: E402
from kerasboost.recipe import load_recipe  # noqa: E402
from kerasboost.rundir import RunDir  # noqa: E402
from kerasboost.tasks import prepare_task  # noqa: E402

pretrain, recipe_path, data = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
recipe = load_recipe(
    recipe_path,
    [
        f"model.preset={pretrain}",
        f"data.source={data}",
        "data.sequence_length=32",
        "model.config.max_sequence_length=32",
    ],
)
with tempfile.TemporaryDirectory() as scratch:
    task = prepare_task(recipe, RunDir(Path(scratch)), prepare_data(recipe))
    assert task.tokenizer.get_vocabulary() == (pretrain / "vocabulary.txt").read_text().splitlines()
exported = keras_hub.models.BertBackbone.from_preset(str(pretrain / "preset"))
x = {name: values.astype("int32") for name, values in task.batches.train.head(4).items()}
x = {name: x[name] for name in ("token_ids", "padding_mask")}
x["segment_ids"] = np.zeros_like(x["token_ids"])
ours = keras.ops.convert_to_numpy(task.backbone(x)["sequence_output"])
theirs = keras.ops.convert_to_numpy(exported(x)["sequence_output"])
np.testing.assert_allclose(ours, theirs, atol=1e-6)
print("TRANSFER OK")
