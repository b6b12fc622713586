"""`kerasboost bench`: how fast a recipe trains on this machine, measured through the real training path.

The recipe's own data pipeline, model, adapters and compiled train step run under `fit` for `steps`
optimizer steps with no evaluation, checkpoints or logs. Reported: time to the first step (tracing and
compilation), the median step time after `warmup` steps, tokens/s, model TFLOP/s and MFU (train/flops.py),
the process's peak memory, and the optimizer state's size (it grows with the trainable parameters only).

Then the same compiled step runs as many steps again on one pre-made batch held in memory (synthetic
input: no gathering, masking or host work): the ratio of the two rates says whether the input pipeline
keeps the model fed (1.0: it costs nothing). With `profile`, a last stretch of up to 10 steps on the real
pipeline runs under the backend's profiler (kerasboost/profiling.py): a trace to open in TensorBoard and
the operations that took the most time.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from pathlib import Path

import keras
import numpy as np

from kerasboost.backend import peak_memory_mib, use_precision
from kerasboost.data.pipeline import training_batches
from kerasboost.data.prepare import prepare_data
from kerasboost.distribute import Distributed
from kerasboost.profiling import profile_trace
from kerasboost.recipe import Recipe
from kerasboost.rundir import RunDir
from kerasboost.runner import build_task
from kerasboost.train.flops import Speed, compute_dtype, flops_per_token, matmul_peak
from kerasboost.train.logging import MicroBatchCounter


class StepTimer(MicroBatchCounter):
    """When each execution of `fit` ended and how many micro-batches (at most `limit`) had run by then."""

    def __init__(self, limit: float = math.inf):
        super().__init__(limit=limit)
        self.ends: list[tuple[float, int]] = []

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        self.ends.append((time.perf_counter(), self.micro_batches))

    def step_times(self, started: float, accumulation: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Seconds of each execution (the first one includes the compilation) and its optimizer steps."""
        times, done = zip(*self.ends)
        return np.diff([started, *times]), np.diff([0, *done]) / accumulation


def steady_step_time(seconds: np.ndarray, steps: np.ndarray, skipped: int) -> float:
    """Median seconds per optimizer step over the executions after the first `skipped` (the last is always kept)."""
    skipped = min(skipped, len(seconds) - 1)
    return float(statistics.median(np.asarray(seconds[skipped:]) / np.asarray(steps[skipped:])))


def benchmark(recipe: Recipe, steps: int, warmup: int, profile: Path | None = None, top: int = 15) -> dict:
    """Trains `steps` optimizer steps of `recipe` and returns the measurements (see the module docstring);
    with `profile`, also a profiler trace written there and the `top` operations by time."""
    precision = use_precision(recipe.train.precision)
    config = recipe.train
    with tempfile.TemporaryDirectory(prefix="kerasboost-bench-") as scratch:
        run_dir = RunDir(Path(scratch))
        task, _ = build_task(recipe, run_dir, prepare_data(recipe, run_dir), Distributed())
        micro_batch = config.batch_size // config.gradient_accumulation
        dataset = training_batches(task.batches, micro_batch, recipe.seed, 0, steps * config.gradient_accumulation)
        micro_batches = steps * config.gradient_accumulation
        executed = task.model.steps_per_execution
        skipped = math.ceil(warmup * config.gradient_accumulation / executed)
        first_execution, steady = _timed_fit(task.model, dataset, micro_batches, config.gradient_accumulation, skipped)
        synthetic = dataset.take(1).cache().repeat()
        _, synthetic_steady = _timed_fit(task.model, synthetic, micro_batches, config.gradient_accumulation, skipped=1)
        profiled = (
            _profiled_fit(task.model, dataset, min(steps, 10), config.gradient_accumulation, profile, top)
            if profile
            else {}
        )
    tokens_per_second = config.batch_size * task.batches.tokens_per_example / steady
    speed = Speed(flops_per_token(task), matmul_peak(compute_dtype(), size=2048))
    model = task.model
    return {
        "backend": keras.backend.backend(),
        "precision": precision.policy,
        "steps": steps,
        "batch_size": config.batch_size,
        "sequence_length": task.batches.tokens_per_example,
        "vocabulary_size": int(task.backbone.vocabulary_size),
        "parameters": int(model.count_params()),
        "trainable_parameters": int(sum(np.prod(v.shape) for v in model.trainable_weights)),
        "optimizer_state_mib": sum(np.prod(v.shape) * np.dtype(v.dtype).itemsize for v in model.optimizer.variables)
        / 2**20,
        "steps_per_execution": executed,
        "time_to_first_step_s": float(first_execution[0] - (first_execution[1] - 1) * steady),
        "step_time_s": float(steady),
        "tokens_per_second": tokens_per_second,
        "synthetic_tokens_per_second": config.batch_size * task.batches.tokens_per_example / synthetic_steady,
        "input_ratio": synthetic_steady / steady,
        "flops_per_token": speed.flops_per_token,
        "model_tflops": tokens_per_second * speed.flops_per_token / 1e12,
        "peak_tflops": speed.peak_flops / 1e12,
        "mfu": speed.mfu(tokens_per_second),
        "peak_memory_mib": peak_memory_mib(),
        **profiled,
    }


def _timed_fit(
    model, dataset, micro_batches: int, accumulation: int, skipped: int
) -> tuple[tuple[float, float], float]:
    """Trains on `micro_batches` of `dataset`: (seconds and steps of the first execution, median seconds
    per optimizer step over the executions after the first `skipped`)."""
    timer = StepTimer(limit=micro_batches)
    started = time.perf_counter()
    model.fit(dataset, epochs=1, steps_per_epoch=micro_batches, callbacks=[timer], shuffle=False, verbose=0)
    seconds, steps_done = timer.step_times(started, accumulation)
    return (float(seconds[0]), float(steps_done[0])), steady_step_time(seconds, steps_done, skipped)


def _profiled_fit(model, dataset, steps: int, accumulation: int, directory: Path, top: int) -> dict:
    """`steps` more optimizer steps under the backend's profiler: where the trace is and its top operations."""
    with profile_trace(directory) as times:
        model.fit(dataset, epochs=1, steps_per_epoch=steps * accumulation, shuffle=False, verbose=0)
    return {"profile_dir": str(directory), "top_ops": times.top(top, steps)}


def format_profile(row: dict) -> str:
    """The operations of a profiled `benchmark` row that took the most time, as markdown."""
    lines = [
        f"{row['backend']} {row['precision']}: trace in {row['profile_dir']}",
        "",
        "| operation | ms per step | share |",
        "|---|---|---|",
    ]
    lines += [f"| {op['op']} | {op['ms_per_step']:,.2f} | {op['share']:.1%} |" for op in row["top_ops"]]
    return "\n".join(lines)


def normalise_mfu(rows: list[dict]) -> list[dict]:
    """One device peak for every row of the same precision: the best matmul any backend reached on it."""
    for precision in {row["precision"] for row in rows}:
        same = [row for row in rows if row["precision"] == precision]
        peak = max(row["peak_tflops"] for row in same)
        for row in same:
            row["peak_tflops"] = peak
            row["mfu"] = row["model_tflops"] / peak
    return rows


def format_table(rows: list[dict]) -> str:
    """A markdown table of `benchmark` rows."""
    header = (
        "| backend | precision | tokens/s | step ms | first step s | TFLOP/s | MFU | input ratio | peak memory MiB | "
        "optimizer MiB |"
    )
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for row in rows:
        lines.append(
            f"| {row['backend']} | {row['precision']} | {row['tokens_per_second']:,.0f} | "
            f"{row['step_time_s'] * 1e3:,.1f} | {row['time_to_first_step_s']:.1f} | {row['model_tflops']:.3f} | "
            f"{row['mfu']:.1%} | {row['input_ratio']:.2f} | {row['peak_memory_mib']:,.0f} | "
            f"{row['optimizer_state_mib']:,.1f} |"
        )
    return "\n".join(lines)
