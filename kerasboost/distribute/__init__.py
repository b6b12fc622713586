"""Spreading one run over devices and processes, each backend through its own engine.

    jax         keras.distribution: DataParallel, or ModelParallel with our Megatron layouts (layouts.py);
                several processes via keras.distribution.initialize
    tensorflow  tf.distribute: MirroredStrategy, TPUStrategy (several hosts are refused: see tensorflow.py)
    torch       torch.distributed (gloo on CPU, nccl on GPU): one process per replica, started by
                torchrun or `kerasboost run --nproc N` (launch.py); gradients averaged every step

`setup` returns a `Distributed`; the runner and the training loop use only its methods, so no other
module knows which engine runs underneath.
"""

from __future__ import annotations

import os

from kerasboost.distribute.engine import Distributed
from kerasboost.errors import InputError
from kerasboost.recipe import DistributionConfig, TrainConfig

MODEL_PARALLEL_BACKENDS = ("jax",)

__all__ = ["Distributed", "MODEL_PARALLEL_BACKENDS", "check_strategy", "setup"]


def setup(config: DistributionConfig, train: TrainConfig, backbone: str, backend: str) -> Distributed:
    """The recipe's `distribution:` on `backend`, checked against `train`'s batch sizes (and, for a model
    parallel layout, the `backbone`); must run before any model (or JAX computation) exists."""
    check_strategy(config, backend)
    launched = _launched_processes(backend)
    if config.strategy == "none":
        if launched > 1:
            raise InputError(
                f"distribution.strategy: none, but {launched} processes were launched; "
                "set distribution.strategy=data_parallel"
            )
        return Distributed()
    if backend == "jax":
        from kerasboost.distribute import jax as engine
    elif backend == "tensorflow":
        from kerasboost.distribute import tensorflow as engine
    else:
        from kerasboost.distribute import torch as engine
    distributed = engine.setup(config, backbone) if backend == "jax" else engine.setup(config)
    micro_batch = train.batch_size // train.gradient_accumulation
    if micro_batch % distributed.replicas:
        distributed.close()
        accumulation = (
            f" (micro-batch {micro_batch} with gradient_accumulation)" if micro_batch != train.batch_size else ""
        )
        raise InputError(
            f"train.batch_size: the global batch {train.batch_size}{accumulation} "
            f"does not divide over {distributed.replicas} replicas"
        )
    return distributed


def check_strategy(config: DistributionConfig, backend: str) -> None:
    """Refuses a strategy the backend has no engine for (cheap: imports nothing)."""
    if config.strategy == "model_parallel" and backend not in MODEL_PARALLEL_BACKENDS:
        raise InputError(
            "distribution.strategy: model_parallel needs the jax backend (keras.distribution); "
            f"on {backend} use data_parallel"
        )


def _launched_processes(backend: str) -> int:
    """How many processes a launcher started for this run (1 when none did)."""
    if backend == "torch":
        return int(os.environ.get("WORLD_SIZE", "1"))
    if backend == "jax":
        return int(os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES", "1"))
    return 1
