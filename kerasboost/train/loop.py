"""The one training loop every task goes through: a single `model.fit` over a resumable stream.

Keras "epochs" here are evaluation periods of `train.eval_every` optimizer steps; a callback evaluates,
logs and checkpoints at the end of each, and stops training at exactly `total_steps`. One `fit` call
(rather than one per period) keeps one input iterator alive for the whole run; a run resumed inside a
period first trains to the period's end in a `fit` of its own, so evaluations and checkpoints fall on the
same steps as in a run that was never stopped.

A signal stops the run at the next optimizer step with a checkpoint of that step (`Preempted`); a
non-finite loss stops it before anything is written (train/guards.py).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass, field

import keras

from kerasboost.data.pipeline import evaluation_batches, training_batches
from kerasboost.distribute import Distributed
from kerasboost.errors import Preempted
from kerasboost.recipe import CheckpointConfig, Recipe
from kerasboost.rundir import RunDir
from kerasboost.train.checkpoints import save_checkpoint
from kerasboost.train.flops import Speed
from kerasboost.train.guards import NonFiniteLoss, Preemption, StepGuard, check_finite_weights
from kerasboost.train.logging import RunLog, StepLogger, learning_rate, perplexity
from kerasboost.train.optimizer import build_schedule
from kerasboost.train.watch import Watch, watch_state, watches


@dataclass
class TrainResult:
    final_step: int
    evaluations: list[dict] = field(default_factory=list)
    steady_tokens_per_second: float = float("nan")
    stopped: str = ""  # why the run ended before train.steps (early stopping), else ""
    watches: dict[str, Watch] = field(default_factory=dict)


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
        preemption: Preemption,
        max_skipped_steps: int,
        watching: dict[str, Watch],
        patience: int | None,
    ):
        super().__init__()
        self.max_skipped_steps = max_skipped_steps
        self.patience = patience
        self.evaluate = evaluate
        self.distributed = distributed
        self.steps = steps
        self.checkpoints = checkpoints
        self.run = run
        self.total_steps = total_steps
        self.tokens_per_step = tokens_per_step
        self.preemption = preemption
        self.result = TrainResult(final_step=steps.step, watches=watching)
        self.checkpointed: int | None = None
        self._steady = [0, 0.0]  # tokens, seconds, over periods after the first (which pays for compilation)
        self._period = (0.0, 0)
        self._saved_at = time.perf_counter()
        self._ranks: dict[str, int] | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self._period = (time.perf_counter(), self.steps.step)

    def on_train_batch_end(self, batch, logs=None):
        """`checkpoint.every_minutes`: a checkpoint at the first step boundary that long after the last one
        (`self.model` syncs JAX's state into the model, so it is read only then)."""
        minutes = self.checkpoints.every_minutes
        if minutes is None or time.perf_counter() - self._saved_at < 60 * minutes:
            return
        if self.steps.micro_batches % self.steps.accumulation == 0 and self.steps.step != self.checkpointed:
            self._checkpoint(self.steps.step)

    def on_epoch_end(self, epoch, logs=None):
        step = self.steps.step
        if self.preemption.signal is not None:  # no evaluation: the scheduler's grace period is short
            self._checkpoint(step)
            self.result.final_step = step
            return
        started, first_step = self._period
        seconds = time.perf_counter() - started
        tokens = (step - first_step) * self.tokens_per_step
        if epoch > 0:
            self._steady[0] += tokens
            self._steady[1] += seconds
        skipped = getattr(self.model.optimizer, "skipped_steps", None)
        skipped = None if skipped is None else int(keras.ops.convert_to_numpy(skipped))
        self.result.evaluations.append(
            self.evaluate(step, self.distributed.mean(float(logs["loss"])), tokens / seconds, skipped)
        )
        if skipped is not None and skipped > self.max_skipped_steps:
            raise NonFiniteLoss(
                f"step {step}: {skipped} steps skipped for a non-finite update, more than "
                f"train.max_skipped_steps ({self.max_skipped_steps}); the last checkpoint is the last good state"
            )
        self._log_ranks(step)
        watching = self.result.watches
        entry = self.result.evaluations[-1]
        improved = "best" in watching and watching["best"].update(entry, step)
        if "early_stopping" in watching:
            early = watching["early_stopping"]
            early.update(entry, step)
            if early.waited >= self.patience:
                self.model.stop_training = True
                self.result.stopped = (
                    f"early stopping at step {step}: {early.metric} did not improve by more than {early.min_delta:g} "
                    f"in {early.waited} evaluations (best {early.describe()})"
                )
        every = self.checkpoints.every_steps
        due = (every and step // every > self.result.final_step // every) or step == self.total_steps
        if due or self.result.stopped:
            self._checkpoint(step)
        if improved:
            self._checkpoint(step, best=True)
        self.result.final_step = step
        if self._steady[1]:
            self.result.steady_tokens_per_second = self._steady[0] / self._steady[1]

    def _log_ranks(self, step: int) -> None:
        """AdaLoRA: each layer's allocated rank and their total, to TensorBoard when they changed since the
        last evaluation."""
        allocator = getattr(self.model.optimizer, "rank_allocator", None)
        ranks = allocator.ranks() if allocator is not None else None
        if ranks is None or ranks == self._ranks:
            return
        self._ranks = ranks
        ranked = {f"adalora/rank/{path}": rank for path, rank in ranks.items()}
        self.steps.log.scalars("train", step, {"adalora/total_rank": sum(ranks.values()), **ranked})

    def _checkpoint(self, step: int, best: bool = False) -> None:
        """The step's checkpoint (once), or with `best` the best one (checkpoints/best/, the only one there)."""
        if step == self.checkpointed and not best:
            return
        check_finite_weights(self.model, step)
        allocator = getattr(self.model.optimizer, "rank_allocator", None)
        if allocator is not None:
            allocator.mirror()
        if self.distributed.saves_weights:
            directory, keep = (
                (self.run.checkpoints / "best", 1) if best else (self.run.checkpoints, self.checkpoints.keep)
            )
            save_checkpoint(self.model, directory, step, keep, {"watch": watch_state(self.result.watches)})
        if not best:
            self.checkpointed = step
            self._saved_at = time.perf_counter()


def train(
    task,
    recipe: Recipe,
    run: RunDir,
    log: RunLog,
    start_step: int,
    total_steps: int,
    distributed: Distributed,
    speed: Speed,
    resumed: dict | None = None,
    preemption: Preemption | None = None,
) -> TrainResult:
    """Trains `task.model` from `start_step` to `total_steps` optimizer steps, evaluating every `train.eval_every`.

    Every process of a distributed run goes through here in lockstep; `distributed.saves_weights` says
    which ones checkpoint. `resumed` is the state of the checkpoint a resumed run starts from;
    `preemption` the signal handler the caller installed before building the model (else one is
    installed here).
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

    def evaluate(step: int, train_loss=None, tokens_per_second=None, skipped=None) -> dict:
        values = validation_metrics(task, validation, log, step)
        if skipped is not None:
            log.scalars("train", step, {"skipped_steps": skipped})
        return _report(values, log, step, total_steps, schedule, train_loss, tokens_per_second, skipped)

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
    preemption = preemption or Preemption()
    watching = watches(config.early_stopping, recipe.checkpoint.best)
    for role, watch in watching.items():
        watch.restore((resumed or {}).get("watch", {}).get(role))
    period_end = PeriodEnd(
        evaluate,
        steps,
        recipe.checkpoint,
        run,
        total_steps,
        config.batch_size * batches.tokens_per_example,
        distributed,
        preemption,
        config.max_skipped_steps,
        watching,
        config.early_stopping.patience if config.early_stopping else None,
    )
    period_end.checkpointed = start_step if resumed is not None else None  # where a signal now leaves it
    guard = StepGuard(steps, preemption, config.nonfinite)
    with preemption.installed() if not preemption.active else contextlib.nullcontext():
        if start_step == 0 and preemption.signal is None:
            period_end.result.evaluations.append(evaluate(0))
        for first, count in _segments(start_step, total_steps, config.eval_every):
            if preemption.signal is not None or period_end.result.stopped:
                break
            model.fit(
                training_batches(
                    batches,
                    micro_batch,
                    recipe.seed,
                    first * accumulation,
                    count * accumulation,
                    distributed.data_shard(),
                ),
                epochs=math.ceil(count / config.eval_every),
                steps_per_epoch=min(count, config.eval_every) * accumulation,
                callbacks=[steps, guard, period_end],
                shuffle=False,
                verbose=1 if sys.stdout.isatty() else 0,
            )
    if preemption.signal is not None and period_end.result.final_step < total_steps:
        log.flush()
        saved = period_end.checkpointed
        where = f"checkpoint {run.checkpoints}/step-{saved:08d}" if saved is not None else "no checkpoint"
        raise Preempted(
            f"{preemption.name} at step {period_end.result.final_step}: {where}; continue with --resume",
            preemption.signal,
        )
    if task.after_training is not None:
        task.after_training(log, period_end.result.final_step)
    log.flush()
    return period_end.result


def _segments(start_step: int, total_steps: int, eval_every: int) -> list[tuple[int, int]]:
    """(first step, steps) of each `fit`: to the end of the period `start_step` falls in, then the rest."""
    segments, step = [], start_step
    if step % eval_every and step < total_steps:
        first = min(eval_every - step % eval_every, total_steps - step)
        segments.append((step, first))
        step += first
    if step < total_steps:
        segments.append((step, total_steps - step))
    return segments


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
    values: dict,
    log: RunLog,
    step: int,
    total_steps: int,
    schedule,
    train_loss=None,
    tokens_per_second=None,
    skipped=None,
) -> dict:
    entry = {"step": step, "learning_rate": learning_rate(schedule, step), **{f"val_{k}": v for k, v in values.items()}}
    if skipped is not None:
        entry["skipped_steps"] = skipped
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
    if skipped:
        shown += f"  {skipped} skipped"
    print(shown, flush=True)
    return entry
