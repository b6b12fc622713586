"""The one training loop every task goes through: a single `model.fit` over a resumable stream.

Keras "epochs" here are evaluation periods of `train.eval_every` optimizer steps; a callback evaluates,
logs and checkpoints at the end of each, and stops training at exactly `total_steps`. One `fit` call
(rather than one per period) keeps one input iterator alive for the whole run.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field

import keras

from kerasboost.data.pipeline import evaluation_batches, training_batches
from kerasboost.distribute import Distributed
from kerasboost.recipe import CheckpointConfig, Recipe
from kerasboost.rundir import RunDir
from kerasboost.train.checkpoints import save_checkpoint
from kerasboost.train.flops import Speed
from kerasboost.train.logging import RunLog, StepLogger, learning_rate, perplexity
from kerasboost.train.optimizer import build_schedule


@dataclass
class TrainResult:
    final_step: int
    evaluations: list[dict] = field(default_factory=list)
    steady_tokens_per_second: float = float("nan")


class PeriodEnd(keras.callbacks.Callback):
    """At the end of each evaluation period: validation metrics, TensorBoard, metrics.jsonl, and a
    checkpoint when the period crossed a multiple of `checkpoint.every_steps` (or ended the run)."""

    def __init__(
        self,
        evaluate,
        steps: StepLogger,
        checkpoints: CheckpointConfig,
        run: RunDir,
        total_steps: int,
        tokens_per_step: int,
        distributed: Distributed,
    ):
        super().__init__()
        self.evaluate = evaluate
        self.distributed = distributed
        self.steps = steps
        self.checkpoints = checkpoints
        self.run = run
        self.total_steps = total_steps
        self.tokens_per_step = tokens_per_step
        self.result = TrainResult(final_step=steps.step)
        self._steady = [0, 0.0]  # tokens, seconds, over periods after the first (which pays for compilation)
        self._period = (0.0, 0)

    def on_epoch_begin(self, epoch, logs=None):
        self._period = (time.perf_counter(), self.steps.step)

    def on_epoch_end(self, epoch, logs=None):
        started, first_step = self._period
        seconds = time.perf_counter() - started
        step = self.steps.step
        tokens = (step - first_step) * self.tokens_per_step
        if epoch > 0:
            self._steady[0] += tokens
            self._steady[1] += seconds
        self.result.evaluations.append(
            self.evaluate(step, self.distributed.mean(float(logs["loss"])), tokens / seconds)
        )
        every = self.checkpoints.every_steps
        due = (every and step // every > self.result.final_step // every) or step == self.total_steps
        if due and self.distributed.saves_weights:
            save_checkpoint(self.model, self.run.checkpoints, step, self.checkpoints.keep)
        self.result.final_step = step
        if self._steady[1]:
            self.result.steady_tokens_per_second = self._steady[0] / self._steady[1]


def train(
    task,
    recipe: Recipe,
    run: RunDir,
    log: RunLog,
    start_step: int,
    total_steps: int,
    distributed: Distributed,
    speed: Speed,
) -> TrainResult:
    """Trains `task.model` from `start_step` to `total_steps` optimizer steps, evaluating every `train.eval_every`.

    Every process of a distributed run goes through here in lockstep; `distributed.saves_weights` says
    which ones checkpoint.
    """
    model, batches = task.model, task.batches
    config = recipe.train
    accumulation = config.gradient_accumulation
    micro_batch = config.batch_size // accumulation
    validation = evaluation_batches(
        batches.validation,
        batches.transform,
        config.batch_size,
        recipe.seed + 1,
        config.eval_batches,
        distributed.validation_multiple(config.batch_size),
    )
    schedule = build_schedule(config, total_steps)

    def evaluate(step: int, train_loss=None, tokens_per_second=None) -> dict:
        values = validation_metrics(task, validation, log, step)
        return _report(values, log, step, total_steps, schedule, train_loss, tokens_per_second)

    steps = StepLogger(
        log,
        schedule,
        start_step,
        accumulation,
        micro_batch * batches.tokens_per_example,
        recipe.logging.every_steps,
        total_steps,
        speed,
        distributed.mean,
    )
    period_end = PeriodEnd(
        evaluate,
        steps,
        recipe.checkpoint,
        run,
        total_steps,
        config.batch_size * batches.tokens_per_example,
        distributed,
    )
    if start_step == 0:
        period_end.result.evaluations.append(evaluate(0))
    remaining = total_steps - start_step
    if remaining > 0:
        dataset = training_batches(
            batches,
            micro_batch,
            recipe.seed,
            start_step * accumulation,
            remaining * accumulation,
            distributed.data_shard(),
        )
        model.fit(
            dataset,
            epochs=math.ceil(remaining / config.eval_every),
            steps_per_epoch=config.eval_every * accumulation,
            callbacks=[steps, period_end],
            shuffle=False,
            verbose=1 if sys.stdout.isatty() else 0,
        )
    if task.after_training is not None:
        task.after_training(log, period_end.result.final_step)
    log.flush()
    return period_end.result


def validation_metrics(task, validation, log: RunLog, step: int) -> dict[str, float]:
    """The compiled losses and metrics on the validation set, perplexity, and the task's own extras."""
    results = task.model.evaluate(validation, verbose=0, return_dict=True)
    values = {name: float(results[name]) for name in sorted(results, key=lambda name: (name != "loss", name))}
    if task.perplexity_of:
        values["perplexity"] = perplexity(values[task.perplexity_of])
    if task.extra_metrics is not None:
        values.update(task.extra_metrics(task.model, validation, log, step))
    log.scalars("validation", step, values)
    return values


def _report(
    values: dict, log: RunLog, step: int, total_steps: int, schedule, train_loss=None, tokens_per_second=None
) -> dict:
    entry = {"step": step, "learning_rate": learning_rate(schedule, step), **{f"val_{k}": v for k, v in values.items()}}
    shown = f"step {step:>{len(str(total_steps))}}/{total_steps}"
    if train_loss is not None:
        entry.update(loss=train_loss, tokens_per_second=tokens_per_second)
        shown += f"  loss {train_loss:.4f}"
    log.record(entry)
    shown += "".join(
        f"  val_{name} {value:.1f}" if name == "perplexity" else f"  val_{name} {value:.4f}"
        for name, value in values.items()
    )
    if tokens_per_second:
        shown += f"  {tokens_per_second:,.0f} tokens/s"
    print(shown, flush=True)
    return entry
