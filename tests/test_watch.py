"""Watching a metric: early stopping's patience and the best checkpoint, on scripted metric sequences
(no ML library is imported)."""

from __future__ import annotations

import pytest

from kerasboost.errors import InputError
from kerasboost.recipe import EarlyStoppingConfig, MetricWatch
from kerasboost.train.watch import watches


def evaluations(metric: str, values: list[float]) -> list[tuple[int, dict]]:
    return [(step, {"step": step, metric: value, "val_accuracy": 0.5}) for step, value in zip(range(2, 99, 2), values)]


def stopping_step(config: EarlyStoppingConfig, values: list[float]) -> int | None:
    watch = watches(config, None)["early_stopping"]
    for step, entry in evaluations(config.metric, values):
        watch.update(entry, step)
        if watch.waited >= config.patience:
            return step
    return None


@pytest.mark.parametrize(
    "config, values, expected",
    [
        (EarlyStoppingConfig(patience=2), [3.0, 2.5, 2.6, 2.4, 2.45, 2.5, 2.0], 12),
        (EarlyStoppingConfig(patience=3), [3.0, 2.5, 2.6, 2.4, 2.45, 2.5, 2.0], None),
        (EarlyStoppingConfig(patience=1, min_delta=0.2), [3.0, 2.9, 2.7, 2.6], 4),
        (EarlyStoppingConfig(metric="val_macro_f1", mode="max", patience=2), [0.2, 0.4, 0.4, 0.39, 0.5], 8),
        (EarlyStoppingConfig(patience=2), [float("nan"), 1.0, 1.1, float("nan")], 8),  # NaN never improves
    ],
    ids=["min", "patience-not-reached", "min-delta", "max", "nan"],
)
def test_early_stopping_stops_at_the_right_evaluation(config, values, expected):
    assert stopping_step(config, values) == expected


def test_the_best_step_and_its_state_survive_a_resume():
    values = [3.0, 2.5, 2.6, 2.4, 2.45]
    whole = watches(None, MetricWatch())["best"]
    for step, entry in evaluations("val_loss", values):
        whole.update(entry, step)
    assert (whole.best, whole.best_step, whole.waited) == (2.4, 8, 1)

    first, second = watches(None, MetricWatch())["best"], watches(None, MetricWatch())["best"]
    for step, entry in evaluations("val_loss", values)[:3]:
        first.update(entry, step)
    second.restore(first.state())
    for step, entry in evaluations("val_loss", values)[3:]:
        second.update(entry, step)
    assert second.state() == whole.state()


def test_an_unknown_metric_is_one_line_naming_the_key():
    watch = watches(EarlyStoppingConfig(metric="val_f1"), None)["early_stopping"]
    with pytest.raises(InputError, match=r"train.early_stopping.metric: the run records no 'val_f1' \(it has"):
        watch.update({"step": 2, "val_loss": 1.0, "val_accuracy": 0.5}, 2)
