"""Shared test helpers: tiny-model overrides, running the CLI in a subprocess on a chosen backend, and (for
the per-backend tests, which import keras) a tiny BERT masked-LM with a batch for it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
BACKENDS = ("tensorflow", "jax", "torch")

# 2 layers, hidden 32, vocabulary ~1000, sequence 32: a whole run takes seconds on 2 CPU cores. float32,
# so comparisons between runs (resume, distributed vs single device) hold to 1e-4 on any CPU;
# `precision: auto` has its own tests (backends/test_speed_defaults.py, the causal-LM run in e2e/test_tasks.py).
TINY = [
    "train.precision=float32",
    "model.config.num_layers=2",
    "model.config.num_heads=2",
    "model.config.hidden_dim=32",
    "model.config.intermediate_dim=64",
    "model.config.max_sequence_length=32",
    "data.sequence_length=32",
    "data.vocabulary_size=1000",
    "data.max_documents=400",
    "train.batch_size=16",
    "train.warmup_steps=2",
    "logging.every_steps=1",
]


def overrides(*pairs: str) -> list[str]:
    """`--set` arguments for TINY followed by `pairs` (later ones win)."""
    return [arg for pair in (*TINY, *pairs) for arg in ("--set", pair)]


# The environment as the user's shell had it: importing TensorFlow in this process sets variables
# (TF_CPP_MIN_LOG_LEVEL=1, ...) that must not leak into the subprocesses under test.
_SHELL_ENV = dict(os.environ)


def backend_env(backend: str | None) -> dict:
    env = dict(_SHELL_ENV)
    env.pop("KERAS_BACKEND", None)
    if backend:
        env["KERAS_BACKEND"] = backend
    return env


def kerasboost(
    *args: str, backend: str | None = None, cwd: Path | None = None, timeout: int = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Runs `python -m kerasboost ARGS` (with `env` added to the environment) and returns the completed
    process (text output)."""
    return subprocess.run(
        [sys.executable, "-m", "kerasboost", *args],
        cwd=cwd or ROOT,
        env={**backend_env(backend), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def python(code: str, backend: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Runs a Python snippet on `backend` in a fresh interpreter (keras fixes its backend at import)."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=backend_env(backend),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def explain(process: subprocess.CompletedProcess) -> str:
    return (
        f"exit {process.returncode}\n--- stdout ---\n{process.stdout[-4000:]}\n--- stderr ---\n{process.stderr[-4000:]}"
    )


def stored_arrays(path: Path) -> dict:
    """Every array of a Keras weights file (a checkpoint's model.weights.h5), by its path in the file."""
    import h5py

    found = {}
    with h5py.File(path, "r") as handle:
        handle.visititems(
            lambda name, item: found.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None
        )
    return found


def assert_bitwise_equal(left: Path, right: Path) -> None:
    """Two weights files hold the same arrays, byte for byte."""
    a, b = stored_arrays(left), stored_arrays(right)
    assert a.keys() == b.keys() and all(a[k].tobytes() == b[k].tobytes() for k in a)


def tiny_bert_mlm(dropout: float, vocabulary: int = 200, sequence: int = 16):
    """A seeded 2-layer, hidden-32 keras-hub BERT with our MLM head; imports keras, so call it only where the
    backend is already chosen (tests/backends)."""
    import keras

    from kerasboost.models.backbone import build_backbone
    from kerasboost.models.mlm import build_mlm_model
    from kerasboost.recipe import ModelConfig

    keras.utils.set_random_seed(0)
    config = ModelConfig(
        config=dict(
            num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64, dropout=dropout, max_sequence_length=sequence
        )
    )
    return build_mlm_model(build_backbone(config, vocabulary))


def mlm_batch(rows: int, vocabulary: int = 200, sequence: int = 16, masked: int = 3, padded: int = 0):
    """Random token ids for `tiny_bert_mlm` with the first `masked` positions to predict: (inputs, labels);
    every other row ends in `padded` padding positions."""
    import numpy as np

    ids = np.random.default_rng(0).integers(5, vocabulary, (rows, sequence)).astype("int32")
    padding_mask = np.ones_like(ids)
    padding_mask[1::2, sequence - padded :] = 0
    inputs = {
        "token_ids": ids,
        "segment_ids": np.zeros_like(ids),
        "padding_mask": padding_mask,
        "mask_positions": np.tile(np.arange(masked, dtype="int32"), (rows, 1)),
    }
    return inputs, ids[:, :masked]


def assert_computes_and_trains_as(changed, plain, rows: int = 4, padded: int = 0) -> None:
    """`changed` (a `tiny_bert_mlm` given faster kernels) gives `plain`'s outputs and the same 3-epoch loss
    curve, on a batch whose odd rows end in `padded` padding positions."""
    import keras
    import numpy as np

    x, labels = mlm_batch(rows=rows, padded=padded)
    assert np.allclose(keras.ops.convert_to_numpy(changed(x)), keras.ops.convert_to_numpy(plain(x)), atol=1e-5)
    results = []
    for model in (plain, changed):
        model.compile(
            optimizer=keras.optimizers.SGD(0.1),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=False,
        )
        results.append(model.fit(x, labels, batch_size=rows, epochs=3, verbose=0).history["loss"])
    assert np.allclose(results[0], results[1], rtol=1e-4)
    assert results[1][-1] < results[1][0]


def assert_swapped_only_for_tensorflow_without_xla(use, plain: type, faster: type, count: int) -> None:
    """`use(model, without_xla)` turns the `count` `plain` layers of a `tiny_bert_mlm` into `faster` ones
    on TensorFlow without XLA, and nowhere else, keeping their configs and the weight paths."""
    import keras

    model = tiny_bert_mlm(dropout=0.0)
    paths = [v.path for v in model.weights]
    layers = [layer for layer in model._flatten_layers() if isinstance(layer, plain)]
    configs = [layer.get_config() for layer in layers]
    tensorflow = keras.backend.backend() == "tensorflow"
    assert use(model, without_xla=False) == 0
    assert use(model, without_xla=True) == (count if tensorflow else 0) and len(layers) == count
    assert all(isinstance(layer, faster) == tensorflow for layer in layers)
    assert [layer.get_config() for layer in layers] == configs
    assert [v.path for v in model.weights] == paths


def assert_weights_load_into_a_plain_model(swap, directory: Path) -> None:
    """Weights saved by a `tiny_bert_mlm` changed by `swap(model)` load into a plain one, which then computes
    the same (Keras keys saved weights by class name, which our swapped classes keep)."""
    import keras
    import numpy as np

    x, _ = mlm_batch(rows=2)
    swapped, plain = tiny_bert_mlm(dropout=0.0), tiny_bert_mlm(dropout=0.0)
    swap(swapped)
    for variable in swapped.weights:
        variable.assign(variable + 0.01)
    swapped.save_weights(str(directory / "swapped.weights.h5"))
    plain.load_weights(str(directory / "swapped.weights.h5"))
    assert np.allclose(keras.ops.convert_to_numpy(plain(x)), keras.ops.convert_to_numpy(swapped(x)), atol=1e-5)


def assert_swapped_model_computes_and_trains_as_before(plain: type, faster: type, count: int) -> None:
    """A `tiny_bert_mlm` whose `count` `plain` layers become `faster` ones (plain keras.ops, so on any
    backend) computes and trains as an unchanged one, on rows with padding."""
    from kerasboost.models.kernel_swap import swap_class

    unchanged, swapped = tiny_bert_mlm(dropout=0.0), tiny_bert_mlm(dropout=0.0)
    assert swap_class(swapped, plain, faster) == count
    assert_computes_and_trains_as(swapped, unchanged, padded=5)
