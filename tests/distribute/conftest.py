"""Distributed training on CPU, once per backend, each in its own pytest process.

`tests/test_backends.py` starts `pytest tests/distribute` with KERASBOOST_TEST_BACKEND set, and for
JAX with XLA_FLAGS making 4 CPU devices. TensorFlow gets 2 logical CPU devices here, before its runtime
starts. Model parallel exists on JAX only. Without KERASBOOST_TEST_BACKEND nothing here is collected.
"""

import os

BACKEND = os.environ.get("KERASBOOST_TEST_BACKEND")

if BACKEND:
    from kerasboost.backend import select_backend

    select_backend(BACKEND)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    # Model parallel is jax's engine only; the clipping fix is TensorFlow's.
    collect_ignore_glob: list[str] = [
        name
        for name, owner in (("test_model_parallel.py", "jax"), ("test_mirrored_clipping.py", "tensorflow"))
        if owner != BACKEND
    ]
else:
    collect_ignore_glob = ["test_*.py"]


if BACKEND:
    import pytest

    @pytest.fixture(scope="session")
    def single_device(tmp_path_factory):
        """metrics.jsonl of the tiny MLM run on one device: the curve every distributed run must follow."""
        from runs import train

        return train(tmp_path_factory.mktemp("single"))
