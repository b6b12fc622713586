"""`Distributed`: what the runner and the training loop ask of a distribution engine, answered for one
device and one process. Each engine (jax.py, tensorflow.py, torch.py) subclasses it and overrides what it
changes; a module of its own so that the engines and the package that picks one never import each other.
"""

from __future__ import annotations

import contextlib


class Distributed:
    """One device, one process; the engines subclass this and override what they change."""

    name = "none"

    def __init__(
        self,
        replicas: int = 1,
        process_id: int = 0,
        num_processes: int = 1,
        details: str = "1 device",
        devices: int = 0,
    ):
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

    @property
    def several_steps_per_call(self) -> bool:
        """Whether the engine can run several training steps per compiled call (steps_per_execution > 1)."""
        return True

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
