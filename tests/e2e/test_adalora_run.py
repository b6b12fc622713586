"""AdaLoRA in whole runs, once per backend: the allocated ranks are printed and logged to TensorBoard, the
adapter exports in PEFT's format with its rank pattern, and a run resumed in the middle of the schedule
(after some allocations, before T - tfinal) ends equal to the bit."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import BACKENDS, assert_bitwise_equal, explain, kerasboost, overrides
from test_mlm_run import scalars

pytestmark = pytest.mark.e2e

SETTINGS = overrides(
    "train.steps=12",
    "train.eval_every=4",
    "checkpoint.every_steps=4",
    "checkpoint.keep=5",
    "train.learning_rate=1e-2",
    "model.config.dropout=0.1",
    "peft.method=adalora",
    "peft.targets=all-linear",
    "peft.adalora={init_rank: 4, target_rank: 2, tinit: 2, tfinal: 3, delta_t: 2}",
)


@pytest.fixture(scope="module", params=BACKENDS)
def adalora_run(request, tmp_path_factory):
    run = tmp_path_factory.mktemp(f"adalora-{request.param}") / "run"
    process = kerasboost(
        "run", "recipes/lora_classify.yaml", "--output-dir", str(run), *SETTINGS, backend=request.param
    )
    assert process.returncode == 0, explain(process)
    return request.param, run, process


def test_the_ranks_are_printed_and_logged(adalora_run):
    _, run, process = adalora_run
    # 2 blocks x 6 projections at rank 4; the target, 2 each, is reached at T - tfinal = step 9.
    assert "adalora: total rank 24 of 48 (target 24)" in process.stdout
    logged = scalars(run / "logs" / "train")
    # Allocations after steps 4 and 6 (budgets 32, 25), 8 and 9 (24): evaluations see 48, 25, 24.
    assert logged["adalora/total_rank"] == {4: 48.0, 8: 25.0, 12: 24.0}
    assert len([tag for tag in logged if tag.startswith("adalora/rank/")]) == 12


def test_the_peft_export_records_the_rank_pattern(adalora_run, tmp_path):
    backend, run, _ = adalora_run
    process = kerasboost("export", str(run), "--format", "peft", "--out", str(tmp_path / "peft"), backend=backend)
    assert process.returncode == 0, explain(process)
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert (
        config["peft_type"] == "ADALORA" and config["total_step"] == 12 and config["modules_to_save"] == ["classifier"]
    )
    assert sum(sum(kept) for kept in config["rank_pattern"].values()) == 24


def test_resume_in_the_middle_of_the_schedule_is_exact(adalora_run, tmp_path):
    backend, run, _ = adalora_run
    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed, ignore=shutil.ignore_patterns(".lock", "step-00000012", "preset", "adapter"))
    process = kerasboost(
        "run", "recipes/lora_classify.yaml", "--resume", "--output-dir", str(resumed), *SETTINGS, backend=backend
    )
    assert process.returncode == 0, explain(process)
    assert "at step 8" in process.stdout
    final = "checkpoints/step-00000012/model.weights.h5"
    assert_bitwise_equal(run / final, resumed / final)
