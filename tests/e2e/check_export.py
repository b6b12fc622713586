"""Run on one backend: the exported preset reproduces the trained model's backbone outputs.

Usage: python tests/e2e/check_export.py RUN_DIR [STEP]   (KERAS_BACKEND chooses the backend)
With STEP, the preset must be the best checkpoint's (checkpoints/best/, of that step), else the final one.
"""

import os
import sys
from pathlib import Path

from kerasboost.backend import select_backend

select_backend(os.environ["KERAS_BACKEND"])

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402

from kerasboost.models.backbone import build_backbone  # noqa: E402
from kerasboost.models.mlm import build_mlm_model  # noqa: E402
from kerasboost.recipe import load_recipe  # noqa: E402
from kerasboost.train.checkpoints import newest_intact  # noqa: E402

run = Path(sys.argv[1])
recipe = load_recipe(run / "recipe.yaml")
preset_backbone = keras_hub.models.BertBackbone.from_preset(str(run / "preset"))
tokenizer = keras_hub.models.BertTokenizer.from_preset(str(run / "preset"))
assert tokenizer.get_vocabulary() == (run / "vocabulary.txt").read_text().splitlines()

trained = build_mlm_model(build_backbone(recipe.model, tokenizer.vocabulary_size()))
best = int(sys.argv[2]) if len(sys.argv) > 2 else None
checkpoint = newest_intact(run / "checkpoints" / "best" if best else run / "checkpoints")
assert checkpoint.step == (best or recipe.train.steps), checkpoint.step
trained.load_weights(str(checkpoint.path / "model.weights.h5"))
trained_backbone = next(layer for layer in trained.layers if isinstance(layer, keras_hub.models.BertBackbone))

ids = keras.ops.convert_to_numpy(tokenizer(["Return the number of items in a container."]))
ids = np.concatenate([[tokenizer.cls_token_id], ids[0], [tokenizer.sep_token_id]])[None, :].astype("int32")
inputs = {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": np.ones_like(ids)}
expected = keras.ops.convert_to_numpy(trained_backbone(inputs)["sequence_output"])
actual = keras.ops.convert_to_numpy(preset_backbone(inputs)["sequence_output"])
untrained = keras.ops.convert_to_numpy(
    build_backbone(recipe.model, tokenizer.vocabulary_size())(inputs)["sequence_output"]
)
np.testing.assert_allclose(actual, expected, atol=1e-5)
assert not np.allclose(untrained, expected, atol=1e-3), "the comparison must be able to fail"
print("EXPORT OK", keras.backend.backend())
