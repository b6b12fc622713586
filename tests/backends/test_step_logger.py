"""Step counting under `fit` with several micro-batches per execution, on the backend under test."""

from __future__ import annotations

import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasboost.backend import steps_per_execution
from kerasboost.bench import StepTimer, steady_step_time
from kerasboost.recipe import Recipe
from kerasboost.train.flops import Speed
from kerasboost.train.logging import StepLogger


class Recorded:
    """Stands in for RunLog: keeps what StepLogger logs."""

    def __init__(self):
        self.steps: list[int] = []

    def scalars(self, split, step, values):
        assert split == "train" and values["loss"] > 0 and values["tokens_per_second"] > 0
        self.steps.append(step)


def _three_micro_batches_per_call():
    """A one-layer model compiled with `train.steps_per_execution: 3` (as resolved on this backend), exactly 10
    micro-batches of data, and the resolved steps per execution."""
    recipe = Recipe.model_validate({"train": {"steps_per_execution": 3, "eval_every": 6}})
    executed = steps_per_execution(recipe.train, recipe.logging.every_steps)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse", steps_per_execution=executed)
    data = tf.data.Dataset.from_tensor_slices((np.ones((10, 4), "float32"), np.ones((10, 1), "float32"))).batch(1)
    return model, data, executed


def test_steps_are_counted_per_execution_and_training_stops_at_the_last_step():
    model, data, executed = _three_micro_batches_per_call()
    assert executed == (1 if keras.backend.backend() == "torch" else 3)  # Keras' torch trainer runs one per call
    log = Recorded()
    logger = StepLogger(
        log,
        lambda step: 0.1,
        first_step=0,
        accumulation=1,
        tokens_per_batch=4,
        every=2,
        last_step=10,
        speed=Speed(1.0, 1.0),
    )
    model.fit(data, epochs=2, steps_per_epoch=6, callbacks=[logger], shuffle=False, verbose=0)
    assert logger.step == 10
    # Logged when an execution crosses a multiple of 2: executions end at steps 3, 6, 9 and 10 (the last
    # one is cut short by the end of the data); one step per execution logs every even step.
    assert log.steps == ([2, 4, 6, 8, 10] if executed == 1 else [3, 6, 9, 10])
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 10


@pytest.mark.parametrize(
    "train, every, expected",
    [
        ({}, 10, 10),
        ({"eval_every": 6}, 4, 2),
        ({"eval_every": 100, "gradient_accumulation": 4, "batch_size": 32}, 10, 10),
        ({"eval_every": 7}, 1, 1),
        ({"eval_every": 64}, 32, 16),
        ({"steps_per_execution": 5}, 1, 5),
    ],
)
def test_auto_steps_per_execution_keeps_evaluations_and_logs_between_calls(train, every, expected):
    recipe = Recipe.model_validate({"train": train, "logging": {"every_steps": every}})
    assert steps_per_execution(recipe.train, recipe.logging.every_steps) == (
        1 if keras.backend.backend() == "torch" else expected
    )


def test_bench_timer_counts_the_micro_batches_of_each_execution():
    model, data, executed = _three_micro_batches_per_call()
    timer = StepTimer(limit=10)
    started = time.perf_counter()
    model.fit(data, epochs=1, steps_per_epoch=10, callbacks=[timer], shuffle=False, verbose=0)
    seconds, steps = timer.step_times(started, accumulation=2)
    assert (seconds > 0).all()
    expected = [0.5] * 10 if executed == 1 else [1.5, 1.5, 1.5, 0.5]  # the last call is cut short
    assert steps.tolist() == expected


def test_steady_step_time_is_the_median_per_step_after_the_skipped_executions():
    seconds, steps = np.array([9.0, 2.0, 3.0, 0.4]), np.array([1.0, 2.0, 3.0, 1.0])
    assert steady_step_time(seconds, steps, skipped=1) == 1.0  # median of 1.0, 1.0 and 0.4
    assert steady_step_time(seconds, steps, skipped=0) == 1.0
    assert steady_step_time(seconds, steps, skipped=9) == pytest.approx(0.4)  # the last execution is always kept
