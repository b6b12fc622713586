"""What stops a run early and safely: a signal (preemption) or a loss that is no longer finite.

Preemptible VMs, Kubernetes and Slurm send SIGTERM, a user presses Ctrl-C (SIGINT). `Preemption` turns
the first signal into a flag; `StepGuard` stops `fit` at the next optimizer-step boundary and the loop
checkpoints that step before exiting with the signal's code. A second signal ends the process at once.

A NaN or Inf loss means the weights are, or are about to be, wrong. With `train.nonfinite: stop` the run
ends there with one line, before any checkpoint or export of those weights; `skip` leaves it to the
optimizer (train/optimizer.py), which drops such steps, and stops after `train.max_skipped_steps`.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal

import keras
import numpy as np

from kerasboost.errors import RunFailure


class Preemption:
    """While `installed()`, SIGTERM and SIGINT set `signal` instead of ending the process."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signal: int | None = None
        self.active = False

    @contextlib.contextmanager
    def installed(self):
        previous = {number: signal.signal(number, self._handle) for number in self.SIGNALS}
        self.active = True
        try:
            yield self
        finally:
            self.active = False
            for number, handler in previous.items():
                signal.signal(number, handler)

    def _handle(self, number, frame):
        if self.signal is not None:  # the second signal: no more waiting
            signal.signal(number, signal.SIG_DFL)
            os.kill(os.getpid(), number)
            return
        self.signal = number
        print(f"\n{signal.Signals(number).name}: finishing this step, then checkpointing", flush=True)

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name


class NonFiniteLoss(RunFailure):
    pass


class StepGuard(keras.callbacks.Callback):
    """After every execution: a non-finite train loss stops the run (unless `skip`), a pending signal
    stops `fit` at an optimizer-step boundary. `steps` is the run's StepLogger (it counts the steps)."""

    def __init__(self, steps, preemption: Preemption, nonfinite: str = "stop"):
        super().__init__()
        self.steps = steps
        self.preemption = preemption
        self.nonfinite = nonfinite

    def on_train_batch_end(self, batch, logs=None):
        if self.nonfinite == "stop" and logs and "loss" in logs:
            loss = float(logs["loss"])
            if not math.isfinite(loss):
                raise NonFiniteLoss(
                    f"step {self.steps.step}: the train loss is {loss}; stopped before writing these weights "
                    "(lower train.learning_rate, or set train.nonfinite: skip)"
                )
        if self.preemption.signal is not None and self.steps.micro_batches % self.steps.accumulation == 0:
            self.model.stop_training = True


def check_finite_weights(model: keras.Model, step: int) -> None:
    """Refuses to let non-finite weights reach a checkpoint or an export."""
    for variable in model.trainable_weights:
        if not np.isfinite(keras.ops.convert_to_numpy(variable)).all():
            raise NonFiniteLoss(f"step {step}: {variable.path} holds NaN or Inf; stopped before writing these weights")
