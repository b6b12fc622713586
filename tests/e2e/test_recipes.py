"""Every bundled recipe as a user runs it, on every backend: only sizes and step counts shrunk with `--set`;
precision, kernels, `steps_per_execution` and every other setting stay as shipped. A recipe added to
recipes/ is picked up here without editing this file; those another e2e test already runs on every backend
(`RUN_ELSEWHERE`) are left to it.

Distributed recipes get the CPU devices their comments document, by strategy: JAX 4 host devices,
TensorFlow 2 logical CPUs, PyTorch 2 local processes; a strategy a backend has no engine for must stop
with its one-line error (exit 2).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers import BACKENDS, RECIPES, explain, kerasboost

from kerasboost.distribute import check_strategy
from kerasboost.errors import InputError
from kerasboost.recipe import load_recipe

pytestmark = [pytest.mark.e2e, pytest.mark.recipes]

STEPS = 4
SMALLER = (
    "model.config.num_layers=1",
    "model.config.hidden_dim=32",
    "model.config.intermediate_dim=64",
    "model.config.max_sequence_length=32",
    "data.sequence_length=32",
    "data.vocabulary_size=500",
    "train.batch_size=8",
    f"train.steps={STEPS}",
    "train.eval_every=2",
    "train.warmup_steps=1",
    "generate.max_length=12",
)
# Recipes that another e2e test already runs with `kerasboost run` on every backend (sizes and steps changed,
# every other setting as shipped): run here as well, they would repeat that run and add minutes to the suite.
RUN_ELSEWHERE = {
    "mlm": "test_mlm_run.py",
    "bert_pretrain": "test_tasks.py",
    "classify": "test_tasks.py",
    "gpt2_clm": "test_tasks.py",
    "lora_classify": "test_lora_run.py",
}
FOUR_HOST_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
# strategy -> backend -> (environment, extra arguments): the CPU devices the recipes' comments document.
CPU_DEVICES = {
    "data_parallel": {
        "jax": (FOUR_HOST_DEVICES, ()),
        "tensorflow": ({}, ("--set", "distribution.mesh.batch=2")),
        "torch": ({}, ("--nproc", "2")),
    },
    "model_parallel": {"jax": (FOUR_HOST_DEVICES, ())},
}


def shrunk(recipe) -> list[str]:
    """SMALLER as --set arguments, and fewer documents where that cannot cost a classification its labels."""
    pairs = [*SMALLER, *(["data.max_documents=300"] if recipe.task != "classification" else [])]
    return [arg for pair in pairs for arg in ("--set", pair)]


def refusal(recipe, backend: str):
    try:
        check_strategy(recipe.distribution, backend)
    except InputError as error:
        return str(error)
    return None


def test_the_recipes_left_out_here_run_in_their_own_tests_on_every_backend():
    for name, module in RUN_ELSEWHERE.items():
        assert (RECIPES / f"{name}.yaml").is_file(), name
        text = (Path(__file__).parent / module).read_text(encoding="utf-8")
        assert f'"recipes/{name}.yaml"' in text and "BACKENDS" in text, (name, module)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "path", sorted(p for p in RECIPES.glob("*.yaml") if p.stem not in RUN_ELSEWHERE), ids=lambda p: p.stem
)
def test_bundled_recipe_runs_as_shipped(path: Path, backend: str, tmp_path: Path):
    recipe = load_recipe(path)
    env, extra = CPU_DEVICES.get(recipe.distribution.strategy, {}).get(backend, ({}, ()))
    run = tmp_path / "run"
    process = kerasboost(
        "run",
        str(path.relative_to(RECIPES.parent)),
        "--output-dir",
        str(run),
        *shrunk(recipe),
        *extra,
        backend=backend,
        env=env,
    )
    refused = refusal(recipe, backend)
    if refused:
        assert process.returncode == 2, explain(process)
        assert process.stderr.strip().splitlines() == [f"error: {refused}"], explain(process)
        return
    assert process.returncode == 0, explain(process)
    if recipe.train.precision == "auto":
        assert "(auto: " in process.stdout, "the precision was not left to auto"
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert history[-1]["step"] == STEPS and "val_loss" in history[-1], history
    for entry in history:
        assert all(math.isfinite(v) for v in entry.values() if isinstance(v, float)), entry
    assert any((run / "checkpoints").iterdir())
    if recipe.export.preset:
        assert (run / "preset" / "config.json").is_file()
    if recipe.peft is not None:
        assert (run / "adapter").is_dir()
    if recipe.generate.prompts:
        assert process.stdout.count("  [greedy] ") == len(recipe.generate.prompts), process.stdout[-2000:]
