"""TensorFlow: `tf.distribute` strategies, which Keras' TensorFlow trainer drives natively.

The model, its optimizer and `compile` are created inside `strategy.scope()`; `fit` then splits every
global batch over the replicas and sums the gradients (each replica's loss is scaled by 1/replicas).
Keras' own TensorFlow distribution module is an unfinished prototype in released Keras, so it is not
used. Several hosts (TF_CONFIG) are refused: with Keras 3.15 a plain compiled model already fails under
MultiWorkerMirroredStrategy (`evaluate`'s symbolic build tries to convert the PerReplica batch to one
tensor; building from a plain batch first then fails in a metric's reduction); JAX and PyTorch cover
multi-host training. Which strategy:

    a TPU (TPU_NAME or /dev/accel0)  TPUStrategy
    otherwise                        MirroredStrategy over the GPUs; on a host without accelerators an
                                     explicit `mesh.batch: N` splits the CPU into N logical devices
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import tensorflow as tf

from kerasboost.distribute.engine import Distributed
from kerasboost.errors import InputError
from kerasboost.recipe import DistributionConfig


class StrategyDistribution(Distributed):
    def __init__(self, strategy, name: str, details: str):
        super().__init__(strategy.num_replicas_in_sync, details=details)
        self.strategy = strategy
        self.name = name

    @property
    def several_steps_per_call(self) -> bool:
        """Keras 3.15's multi-step loop under MirroredStrategy with several replicas fails in graph execution
        ("You must feed a value for placeholder tensor 'while/cond/Placeholder'"): one step per call there."""
        return self.replicas == 1 or not isinstance(self.strategy, tf.distribute.MirroredStrategy)

    def validation_multiple(self, batch_size: int) -> int:
        return self.replicas

    def scope(self):
        return self.strategy.scope()

    def prepare(self, model) -> None:
        """Clips the global gradient, not each replica's share of it.

        Keras' TensorFlow optimizer clips inside `apply`, before it sums the replicas' gradients, so with
        `global_clipnorm` each replica would clip its own part. Here the gradients are summed first;
        each replica hands Keras 1/R of the sum and the threshold is divided by R too, so Keras' own
        clip and sum give exactly clip(gradient of the global batch).
        """
        optimizer = model.optimizer
        inner = getattr(optimizer, "inner_optimizer", optimizer)
        if not inner.global_clipnorm or self.replicas == 1:
            return
        replicas = self.replicas
        inner.global_clipnorm = inner.global_clipnorm / replicas
        apply = optimizer.apply

        def apply_summed(grads, trainable_variables=None):
            present = [index for index, grad in enumerate(grads) if grad is not None]
            summed = tf.distribute.get_replica_context().all_reduce(
                "sum", [tf.convert_to_tensor(grads[index]) for index in present]
            )
            grads = list(grads)
            for index, grad in zip(present, summed):
                grads[index] = grad / replicas
            return apply(grads, trainable_variables)

        optimizer.apply = apply_summed


def setup(config: DistributionConfig) -> StrategyDistribution:
    if _tf_config_workers() > 1 or (config.num_processes or 1) > 1:
        # Checked here: Keras 3.15's TensorFlow trainer fails under MultiWorkerMirroredStrategy (its
        # evaluate() tries to turn the PerReplica batch into one tensor), so no multi-host run starts.
        raise InputError(
            "distribution: several TensorFlow workers (TF_CONFIG) are not supported with Keras 3.15 "
            "(MultiWorkerMirroredStrategy fails in Keras' evaluate); use one host, or the jax or torch backend "
            "across hosts"
        )
    if os.environ.get("TPU_NAME") or Path("/dev/accel0").exists():
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
        _check_mesh(config.mesh.batch, strategy.num_replicas_in_sync)
        return StrategyDistribution(
            strategy, "data parallel (tf.distribute.TPUStrategy)", f"{strategy.num_replicas_in_sync} TPU cores"
        )
    devices = _local_devices(config.mesh.batch)
    strategy = tf.distribute.MirroredStrategy(devices=devices)
    return StrategyDistribution(
        strategy, "data parallel (tf.distribute.MirroredStrategy)", f"{len(devices)} replicas on {', '.join(devices)}"
    )


def _tf_config_workers() -> int:
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    except ValueError:
        raise InputError("TF_CONFIG: not valid JSON") from None
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def _local_devices(wanted) -> list[str]:
    if tf.config.list_physical_devices("GPU"):  # physical: listing logical devices would start the runtime
        gpus = [device.name for device in tf.config.list_logical_devices("GPU")]
        _check_mesh(wanted, len(gpus), at_most=True)
        return gpus[: wanted or len(gpus)]
    if wanted and wanted > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        with contextlib.suppress(RuntimeError):  # the runtime already started (e.g. a second run in this process)
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * wanted)
    cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
    _check_mesh(wanted, len(cpus), at_most=True)
    return cpus[: wanted or 1]


def _check_mesh(wanted, available: int, at_most: bool = False) -> None:
    if wanted and (wanted > available if at_most else wanted != available):
        raise InputError(f"distribution.mesh.batch: {wanted} replicas asked, tensorflow has {available}")
