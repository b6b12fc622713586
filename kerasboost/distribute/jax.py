"""JAX: Keras' own distribution API (`keras.distribution`), one global SPMD program over a device mesh.

DataParallel replicates the variables and splits each batch over the `batch` axis; ModelParallel adds
a `model` axis and shards the transformer's kernels by the architecture's layout (architectures/spec.py).
Keras places every variable (and optimizer slot) by its layout when it is created, so
`keras.distribution.set_distribution` runs before the model is built. Several processes (hosts) join
through `keras.distribution.initialize`, and Keras then feeds each process its slice of every global batch.
"""

from __future__ import annotations

import os

import jax
from keras import distribution

from kerasboost.architectures import architecture
from kerasboost.distribute.engine import Distributed
from kerasboost.distribute.layouts import BATCH_AXIS, MODEL_AXIS, transformer_layout_map
from kerasboost.errors import InputError
from kerasboost.recipe import DistributionConfig


class KerasDistribution(Distributed):
    def __init__(self, keras_distribution, name: str, replicas: int, details: str, devices: int):
        super().__init__(replicas, jax.process_index(), jax.process_count(), details, devices)
        self.name = name
        self.keras_distribution = keras_distribution
        distribution.set_distribution(keras_distribution)

    @property
    def saves_weights(self) -> bool:
        return True  # reading an array that spans several processes is a collective: all must take part

    def validation_multiple(self, batch_size: int) -> int:
        return batch_size if self.num_processes > 1 else self.replicas

    def describe_model(self, model) -> str:
        sharded = [variable for variable in model.variables if _is_sharded(variable)]
        if not sharded:
            return f"layout: all {len(model.variables)} variables replicated on every device"
        names = sorted({variable.path.split("/")[-2] for variable in sharded})
        return (
            f"layout: {len(sharded)} of {len(model.variables)} variables sharded over '{MODEL_AXIS}' "
            f"({', '.join(names)}); the rest replicated"
        )

    def close(self) -> None:
        distribution.set_distribution(None)
        if self.num_processes > 1:  # together, here, rather than each process at its own exit
            jax.distributed.shutdown()


def setup(config: DistributionConfig, backbone: str) -> KerasDistribution:
    """`config` over this host's (or every host's) devices; `backbone` names the model-parallel layout."""
    processes = config.num_processes or int(os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES", "1"))
    if processes > 1 and not jax.distributed.is_initialized():
        # JAX 0.10's preemption service deadlocks the shutdown of CPU processes (each waits in a
        # different barrier); kerasboost does not use preemption sync points.
        jax.config.update("jax_enable_preemption_service", False)
        distribution.initialize(config.coordinator, config.num_processes, config.process_id)
    devices = distribution.list_devices()
    platform = devices[0].split(":")[0]
    model_shards = config.mesh.model
    replicas = config.mesh.batch or len(devices) // model_shards
    needed = replicas * model_shards
    if needed > len(devices) or replicas == 0:
        hint = (
            f" (on CPU, XLA_FLAGS=--xla_force_host_platform_device_count={needed} makes {needed})"
            if platform == "cpu"
            else ""
        )
        raise InputError(
            f"distribution.mesh: {replicas or 1} x {model_shards} needs {needed} devices, jax sees {len(devices)}{hint}"
        )
    if jax.process_count() > 1 and needed != len(devices):
        raise InputError(
            f"distribution.mesh: with {jax.process_count()} processes the mesh must use all {len(devices)} devices, "
            f"not {needed}"
        )
    devices = devices[:needed]
    count = f"{needed} {platform} devices"
    if config.strategy == "data_parallel":
        return KerasDistribution(
            distribution.DataParallel(devices=devices),
            "data parallel (keras.distribution.DataParallel)",
            replicas,
            f"mesh {BATCH_AXIS}={replicas} · {count}",
            needed,
        )
    mesh = distribution.DeviceMesh(shape=(replicas, model_shards), axis_names=(BATCH_AXIS, MODEL_AXIS), devices=devices)
    return KerasDistribution(
        distribution.ModelParallel(
            layout_map=transformer_layout_map(mesh, architecture(backbone).layout),
            batch_dim_name=BATCH_AXIS,
        ),
        "model parallel (keras.distribution.ModelParallel, Megatron layout)",
        replicas,
        f"mesh {BATCH_AXIS}={replicas} x {MODEL_AXIS}={model_shards} · {count}",
        needed,
    )


def _is_sharded(variable) -> bool:
    spec = getattr(variable.value.sharding, "spec", ())
    return any(axis is not None for axis in spec)
