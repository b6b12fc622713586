"""What a run records: TensorBoard writers, metrics.jsonl, and the per-step logging callback.

Steps are optimizer updates counted from the start of the run (not of this process), so a resumed run
continues the same curves: `forget_after` first removes what the stopped process logged past the
checkpoint it resumes from (metrics.jsonl lines and TensorBoard events alike, rewritten atomically), so no
step is logged twice and no orphaned point stays. The counting happens here, not from
`optimizer.iterations`, because JAX syncs variables back to Keras only at the end of `fit`.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import keras
import tensorflow as tf


class RunLog:
    """TensorBoard writers (logs/train, logs/validation) and the metrics.jsonl file of one run."""

    def __init__(self, logs_dir: Path, metrics_file: Path, tensorboard: bool = True):
        self.metrics_file = metrics_file
        self._writers = {}
        if tensorboard:
            self._writers = {
                split: tf.summary.create_file_writer(str(logs_dir / split)) for split in ("train", "validation")
            }

    def scalars(self, split: str, step: int, values: dict[str, float]) -> None:
        writer = self._writers.get(split)
        if writer is None:
            return
        with writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(name, value)

    def text(self, name: str, step: int, value: str) -> None:
        writer = self._writers.get("train")
        if writer is not None:
            with writer.as_default(step=step):
                tf.summary.text(name, value)

    def image(self, name: str, step: int, image) -> None:
        writer = self._writers.get("validation")
        if writer is not None:
            with writer.as_default(step=step):
                tf.summary.image(name, image)

    def record(self, entry: dict) -> None:
        with self.metrics_file.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")

    def flush(self) -> None:
        for writer in self._writers.values():
            writer.flush()


class MicroBatchCounter(keras.callbacks.Callback):
    """Counts the micro-batches trained so far, up to `limit`.

    Keras calls back once per execution (`steps_per_execution` micro-batches, fewer at the end of the
    data) with the index of the execution's last micro-batch in the epoch, so the count comes from that
    index, not from the number of calls.
    """

    def __init__(self, first: int = 0, limit: float = math.inf):
        super().__init__()
        self.micro_batches = first
        self.limit = limit
        self._epoch_start = first

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self.micro_batches

    def on_train_batch_end(self, batch, logs=None):
        self.micro_batches = min(self._epoch_start + batch + 1, self.limit)


class StepLogger(MicroBatchCounter):
    """Counts optimizer steps; every `every` steps logs train loss, perplexity, learning rate, tokens/s,
    model TFLOP/s and MFU (`speed`, see train/flops.py).

    Logs when an execution crosses a multiple of `every`. Stops training at `last_step`, which may fall
    inside an evaluation period. `mean` averages the loss over the processes of a distributed run.
    """

    def __init__(
        self,
        log: RunLog,
        schedule,
        first_step: int,
        accumulation: int,
        tokens_per_batch: int,
        every: int,
        last_step: int,
        speed,
        mean=float,
    ):
        super().__init__(first_step * accumulation, last_step * accumulation)
        self.speed = speed
        self.mean = mean  # the train loss averaged over replicas (each process sees its own)
        self.log = log
        self.schedule = schedule
        self.accumulation = accumulation
        self.tokens_per_batch = tokens_per_batch
        self.every = every
        self.step = first_step
        self.last_step = last_step
        self._mark = (0.0, 0)

    def on_train_begin(self, logs=None):
        self._mark = (time.perf_counter(), self.micro_batches)

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        previous, self.step = self.step, self.micro_batches // self.accumulation
        if self.step >= self.last_step:
            self.model.stop_training = True
        if self.step // self.every == previous // self.every:
            return
        now = time.perf_counter()
        since, batches_then = self._mark
        tokens_per_second = (self.micro_batches - batches_then) * self.tokens_per_batch / max(now - since, 1e-9)
        self._mark = (now, self.micro_batches)
        loss = self.mean(float(logs["loss"]))
        self.log.scalars(
            "train",
            self.step,
            {
                "loss": loss,
                "perplexity": perplexity(loss),
                "learning_rate": learning_rate(self.schedule, self.step),
                "tokens_per_second": tokens_per_second,
                "model_tflops_per_second": tokens_per_second * self.speed.flops_per_token / 1e12,
                "mfu": self.speed.mfu(tokens_per_second),
            },
        )


def forget_after(logs_dir: Path, metrics_file: Path, step: int) -> None:
    """Drops every metrics.jsonl line and TensorBoard event of a step after `step` (-1: all of them)."""
    if metrics_file.is_file():
        lines = metrics_file.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [line for line in lines if _jsonl_step(line) <= step]
        if len(kept) != len(lines):
            _replace(metrics_file, lambda path: path.write_text("".join(kept), encoding="utf-8"))
    for events in sorted(logs_dir.glob("*/events.out.tfevents.*")) if logs_dir.is_dir() else []:
        _forget_events_after(events, step)


def _jsonl_step(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf  # a line cut short by a kill: past any checkpoint


def _forget_events_after(path: Path, step: int) -> None:
    kept, dropped = [], False
    try:
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            if event.step <= step or event.HasField("file_version"):
                kept.append(event.SerializeToString())
            else:
                dropped = True
    except tf.errors.DataLossError:
        dropped = True  # the record the stopped process was writing
    if dropped:

        def write(target: Path) -> None:
            with tf.io.TFRecordWriter(str(target)) as writer:
                for record in kept:
                    writer.write(record)

        _replace(path, write)


def _replace(path: Path, write) -> None:
    partial = path.parent / ".rewriting"  # TensorBoard reads every file whose name holds "tfevents"
    write(partial)
    os.replace(partial, path)


def learning_rate(schedule, step: int) -> float:
    return float(keras.ops.convert_to_numpy(schedule(step)))


def perplexity(loss: float) -> float:
    """exp(loss), capped so an untrained model's huge value still plots."""
    return math.exp(min(loss, 50.0))
