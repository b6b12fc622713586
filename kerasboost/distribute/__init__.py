"""Spreading one run over devices and processes, each backend through its own engine.

    jax         keras.distribution: DataParallel, or ModelParallel with our Megatron layouts (layouts.py);
                several processes via keras.distribution.initialize
    tensorflow  tf.distribute: MirroredStrategy, MultiWorkerMirroredStrategy (TF_CONFIG), TPUStrategy
    torch       torch.distributed (gloo on CPU, nccl on GPU): one process per replica, started by
                torchrun or `kerasboost run --nproc N` (launch.py); gradients averaged every step

`setup` returns a `Distributed`; the runner and the training loop use only its methods, so no other
module knows which engine runs underneath.
"""

from __future__ import annotations

import contextlib
import os

from kerasboost.errors import InputError
from kerasboost.recipe import Recipe

MODEL_PARALLEL_BACKENDS = ("jax",)


class Distributed:
    """One device, one process; the engines subclass this and override what they change."""

    name = "none"

    def __init__(self, replicas: int = 1, process_id: int = 0, num_processes: int = 1, details: str = "1 device", devices: int = 0):
        self.replicas = replicas
        self.devices = devices or replicas  # all devices of the run (replicas x model shards)
        self.process_id = process_id
        self.num_processes = num_processes
        self.details = details

    @property
    def primary(self) -> bool:
        """Only the primary process writes the run directory, logs, checkpoints and exports."""
        return self.process_id == 0

    @property
    def saves_weights(self) -> bool:
        """Whether this process writes checkpoints and exports: the primary one, or every process when
        saving is a collective (the non-primary ones then write into their scratch directory)."""
        return self.primary

    def validation_multiple(self, batch_size: int) -> int:
        """The validation set is trimmed to a multiple of this many rows, so every batch splits evenly."""
        return 1

    def scope(self):
        """Where the model, optimizer and compile must happen (TensorFlow's strategy scope)."""
        return contextlib.nullcontext()

    def data_shard(self) -> tuple[int, int]:
        """(index, count): the rows of each global batch this process feeds, when the engine does not."""
        return 0, 1

    def prepare(self, model) -> None:
        """Called once the model is compiled (and restored): engines sync weights or hook gradients here."""

    def mean(self, value: float) -> float:
        """The mean of a per-process number (e.g. the train loss) over all replicas."""
        return value

    def check_replicas(self, model) -> str:
        """After training: confirms that every replica holds the same weights (or says why none need to)."""
        return ""

    def describe_model(self, model) -> str:
        """How the model's variables are laid out over the devices."""
        return ""

    def describe(self, batch_size: int, accumulation: int = 1) -> str:
        micro_batch = batch_size // accumulation
        processes = f" · {self.num_processes} processes" if self.num_processes > 1 else ""
        micro = f" in {accumulation} micro-batches of {micro_batch}" if accumulation > 1 else ""
        return (
            f"distribution: {self.name} · {self.details}{processes} · "
            f"global batch {batch_size}{micro}, per replica {micro_batch // self.replicas}"
        )

    def close(self) -> None:
        """Releases the engine (process groups, the global Keras distribution)."""


def setup(recipe: Recipe, backend: str) -> Distributed:
    """The recipe's `distribution:` on `backend`; must run before any model (or JAX computation) exists."""
    check_strategy(recipe, backend)
    config = recipe.distribution
    launched = _launched_processes(backend)
    if config.strategy == "none":
        if launched > 1:
            raise InputError(
                f"distribution.strategy: none, but {launched} processes were launched; set distribution.strategy=data_parallel"
            )
        return Distributed()
    if backend == "jax":
        from kerasboost.distribute import jax as engine
    elif backend == "tensorflow":
        from kerasboost.distribute import tensorflow as engine
    else:
        from kerasboost.distribute import torch as engine
    distributed = engine.setup(recipe)
    micro_batch = recipe.train.batch_size // recipe.train.gradient_accumulation
    if micro_batch % distributed.replicas:
        distributed.close()
        accumulation = f" (micro-batch {micro_batch} with gradient_accumulation)" if micro_batch != recipe.train.batch_size else ""
        raise InputError(
            f"train.batch_size: the global batch {recipe.train.batch_size}{accumulation} does not divide over {distributed.replicas} replicas"
        )
    return distributed


def check_strategy(recipe: Recipe, backend: str) -> None:
    """Refuses a strategy the backend has no engine for (cheap: imports nothing)."""
    if recipe.distribution.strategy == "model_parallel" and backend not in MODEL_PARALLEL_BACKENDS:
        raise InputError(f"distribution.strategy: model_parallel needs the jax backend (keras.distribution); on {backend} use data_parallel")


def _launched_processes(backend: str) -> int:
    """How many processes a launcher started for this run (1 when none did)."""
    if backend == "torch":
        return int(os.environ.get("WORLD_SIZE", "1"))
    if backend == "jax":
        return int(os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES", "1"))
    return 1
