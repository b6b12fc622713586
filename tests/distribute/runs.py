"""Shared by the distribution tests: tiny MLM runs (dropout off, 10 steps, validation every step)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, TINY, explain

from kerasboost.recipe import Recipe, load_recipe
from kerasboost.runner import run

SETTINGS = [
    *TINY,
    "model.config.dropout=0",
    "train.steps=10",
    "train.eval_every=1",
    "train.eval_batches=2",
    "logging.tensorboard=false",
    "export.preset=false",
]


def recipe(name: str = "mlm", *pairs: str) -> Recipe:
    return load_recipe(ROOT / "recipes" / f"{name}.yaml", [*SETTINGS, *pairs])


def train(directory: Path, name: str = "mlm", *pairs: str) -> list[dict]:
    """Trains in this process and returns metrics.jsonl (one entry per step, step 0 first)."""
    return history(run(recipe(name, *pairs), output_dir=str(directory / "run")).root)


def launch(
    directory: Path, backend: str, nproc: int, *pairs: str, expect_exit: int = 0
) -> tuple[list[dict], subprocess.CompletedProcess]:
    """`kerasboost run --nproc N` with one CPU device per process."""
    env = {key: value for key, value in os.environ.items() if key not in ("XLA_FLAGS", "KERASBOOST_TEST_BACKEND")}
    args = [arg for pair in (*SETTINGS, *pairs) for arg in ("--set", pair)]
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "kerasboost",
            "run",
            "--nproc",
            str(nproc),
            "recipes/mlm.yaml",
            *args,
            "--backend",
            backend,
            "--output-dir",
            str(directory / "run"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert process.returncode == expect_exit, explain(process)
    return (history(directory / "run") if expect_exit == 0 else []), process


def history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_same_curve(reference: list[dict], other: list[dict], rel: float = 1e-4) -> None:
    """Validation loss after every step, and the logged train loss, agree within `rel`."""
    assert [entry["step"] for entry in other] == [entry["step"] for entry in reference]
    for expected, got in zip(reference, other):
        assert got["val_loss"] == pytest.approx(expected["val_loss"], rel=rel), (expected, got)
        if "loss" in expected:
            assert got["loss"] == pytest.approx(expected["loss"], rel=rel), (expected, got)
    assert reference[-1]["val_loss"] < reference[0]["val_loss"]  # the curve is a curve, not a flat line
