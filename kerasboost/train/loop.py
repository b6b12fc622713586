"""The one training loop every task goes through: `fit` in chunks between evaluations.

Each chunk is one `model.fit` call over exactly the batches it needs, so evaluation, checkpoints and
resumption happen at exact optimizer steps, and a final chunk may be shorter than the others.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import keras

from kerasboost.data.pipeline import evaluation_batches, training_batches
from kerasboost.recipe import Recipe
from kerasboost.rundir import RunDir
from kerasboost.train.checkpoints import save_checkpoint
from kerasboost.train.logging import RunLog, StepLogger, learning_rate, perplexity
from kerasboost.train.optimizer import build_schedule


@dataclass
class Batches:
    """What the loop needs from a task's data: in-memory examples and the per-batch transform."""

    train: dict
    validation: dict
    transform: object
    tokens_per_example: int


@dataclass
class TrainResult:
    final_step: int
    evaluations: list[dict] = field(default_factory=list)
    steady_tokens_per_second: float = float("nan")


def train(model: keras.Model, batches: Batches, recipe: Recipe, run: RunDir, log: RunLog, start_step: int, total_steps: int) -> TrainResult:
    """Trains from `start_step` to `total_steps` optimizer steps, evaluating every `train.eval_every`."""
    config = recipe.train
    accumulation = config.gradient_accumulation
    micro_batch = config.batch_size // accumulation
    validation = evaluation_batches(batches.validation, batches.transform, config.batch_size, recipe.seed + 1, config.eval_batches)
    schedule = build_schedule(config, total_steps)
    logger = StepLogger(log, schedule, start_step, accumulation, micro_batch * batches.tokens_per_example, recipe.logging.every_steps)
    result = TrainResult(final_step=start_step)
    if start_step == 0:
        result.evaluations.append(_evaluate(model, validation, log, 0, total_steps, schedule))

    steady_tokens, steady_seconds = 0, 0.0
    step = start_step
    while step < total_steps:
        end = min(total_steps, (step // config.eval_every + 1) * config.eval_every)
        num_batches = (end - step) * accumulation
        dataset = training_batches(batches.train, batches.transform, micro_batch, recipe.seed, step * accumulation, num_batches)
        started = time.perf_counter()
        history = model.fit(dataset, epochs=1, steps_per_epoch=num_batches, callbacks=[logger], shuffle=False, verbose=1 if sys.stdout.isatty() else 0)
        seconds = time.perf_counter() - started
        tokens = num_batches * micro_batch * batches.tokens_per_example
        if step > start_step:  # the first chunk pays for compilation
            steady_tokens += tokens
            steady_seconds += seconds
        step = end
        train_loss = float(history.history["loss"][-1])
        result.evaluations.append(_evaluate(model, validation, log, step, total_steps, schedule, train_loss, tokens / seconds))
        every = recipe.checkpoint.every_steps
        if (every and step % every == 0) or step == total_steps:
            save_checkpoint(model, run.checkpoints, step, recipe.checkpoint.keep)
        result.final_step = step
    if steady_seconds:
        result.steady_tokens_per_second = steady_tokens / steady_seconds
    log.flush()
    return result


def _evaluate(model, validation, log: RunLog, step: int, total_steps: int, schedule, train_loss=None, tokens_per_second=None) -> dict:
    metrics = model.evaluate(validation, verbose=0, return_dict=True)
    values = {"loss": float(metrics["loss"]), "accuracy": float(metrics.get("accuracy", float("nan")))}
    values["perplexity"] = perplexity(values["loss"])
    log.scalars("validation", step, values)
    entry = {"step": step, "learning_rate": learning_rate(schedule, step), **{f"val_{k}": v for k, v in values.items()}}
    if train_loss is not None:
        entry["loss"] = train_loss
        entry["tokens_per_second"] = tokens_per_second
    log.record(entry)
    shown = f"step {step:>{len(str(total_steps))}}/{total_steps}"
    if train_loss is not None:
        shown += f"  loss {train_loss:.4f}"
    shown += f"  val_loss {values['loss']:.4f}  val_accuracy {values['accuracy']:.4f}  val_perplexity {values['perplexity']:.1f}"
    if tokens_per_second and tokens_per_second == tokens_per_second:
        shown += f"  {tokens_per_second:,.0f} tokens/s"
    print(shown, flush=True)
    return entry
