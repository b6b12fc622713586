"""The recipe schema, `base:` inheritance, `--set` overrides and their one-line errors."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest
from helpers import RECIPES, kerasboost

from kerasboost.errors import RecipeError
from kerasboost.recipe import check_files, load_recipe


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_bundled_recipes_validate(path):
    recipe = load_recipe(path)
    check_files(recipe, source=str(path))
    assert recipe.description, f"{path.name} needs a description: line for `kerasboost recipes`"


def test_bundled_recipes_validate_through_the_cli():
    process = kerasboost("validate", *map(str, sorted(RECIPES.glob("*.yaml"))))
    assert process.returncode == 0, process.stderr
    assert process.stdout.count("ok: ") == len(list(RECIPES.glob("*.yaml")))


BROKEN = {
    "unknown_key": ("train:\n  learnig_rate: 0.1\n", "train.learnig_rate: unknown key (did you mean 'learning_rate'?)"),
    "unknown_section": ("trian:\n  steps: 3\n", "trian: unknown key (did you mean 'train'?)"),
    "wrong_type": ("train:\n  batch_size: many\n", "train.batch_size:"),
    "mixture_weight_zero": (
        "data:\n  source:\n    - {path: builtin:pydocs, weight: 0}\n",
        "data.source.0.weight: Input should be greater than 0",
    ),
    "negative_learning_rate": (
        "train:\n  learning_rate: -0.001\n",
        "train.learning_rate: Input should be greater than 0",
    ),
    "missing_data_file": (
        "data:\n  source: /nonexistent/corpus.txt\n",
        "data.source: no file matches '/nonexistent/corpus.txt'",
    ),
    "yaml_syntax": ("train:\n  steps: [1, 2\n", "YAML syntax error: line"),
    "bad_backend": ("backend: theano\n", "backend: Input should be 'tensorflow', 'jax' or 'torch'"),
    "bad_precision": ("train:\n  precision: float8\n", "train.precision:"),
    "steps_and_epochs": ("train:\n  steps: 3\n  epochs: 1\n", "train: give train.steps or train.epochs, not both"),
    "heads_do_not_divide": (
        "model:\n  config:\n    hidden_dim: 30\n    num_heads: 4\n",
        "model.config: hidden_dim (30) must be divisible by num_heads (4)",
    ),
    "not_a_mapping": ("- just\n- a list\n", "a recipe must be a mapping"),
    "bad_task": (
        "task: translation\n",
        "task: Input should be 'mlm', 'bert_pretraining', 'causal_lm' or 'classification'",
    ),
    "sequence_too_long": (
        "data:\n  sequence_length: 1024\n",
        "data.sequence_length (1024) exceeds model.config.max_sequence_length",
    ),
    "accumulation_does_not_divide": (
        "train:\n  batch_size: 10\n  gradient_accumulation: 3\n",
        "batch_size (10) must be divisible by gradient_accumulation (3)",
    ),
    "task_needs_other_backbone": ("task: causal_lm\n", "task causal_lm needs model.backbone: gpt2 (got bert)"),
    "roberta_has_no_next_sentence_prediction": (
        "task: bert_pretraining\nmodel:\n  backbone: roberta\n",
        "task bert_pretraining needs model.backbone: bert (got roberta)",
    ),
    "gpt2_vocabulary_without_merges": (
        "model:\n  backbone: gpt2\ntask: causal_lm\ndata:\n  vocabulary: recipes/mlm.yaml\n",
        "a GPT-2 tokenizer needs both files",
    ),
    "missing_vocabulary": ("data:\n  vocabulary: /nonexistent/vocab.txt\n", "data.vocabulary: file not found"),
    "unknown_model_config_key": (
        "model:\n  config:\n    num_layer: 2\n",
        "model.config.num_layer: unknown key (did you mean 'num_layers'?)",
    ),
    "model_axis_without_model_parallel": (
        "distribution:\n  strategy: data_parallel\n  mesh: {model: 2}\n",
        "mesh.model=2 shards the model: it needs strategy: model_parallel",
    ),
    "model_axis_does_not_divide_heads": (
        "distribution:\n  strategy: model_parallel\n  mesh: {model: 4}\n",
        "distribution.mesh.model (4) must divide model.config.num_heads (2)",
    ),
    "adalora_target_above_init": (
        "peft:\n  method: adalora\n  adalora: {init_rank: 4, target_rank: 8}\n",
        "peft.adalora: target_rank (8) exceeds init_rank (4)",
    ),
    "adalora_with_gradient_accumulation": (
        "peft:\n  method: adalora\ntrain:\n  gradient_accumulation: 2\n",
        "peft.method: adalora scores importance on each optimizer step's gradients",
    ),
    "bad_coordinator": (
        "distribution:\n  strategy: data_parallel\n  coordinator: localhost\n",
        "distribution.coordinator: String should match pattern",
    ),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_recipe_exits_2_with_one_line(tmp_path, name):
    text, expected = BROKEN[name]
    path = write(tmp_path, f"{name}.yaml", text)
    for command in ("validate", "run"):
        process = kerasboost(command, str(path), backend="tensorflow")
        assert process.returncode == 2, process.stderr
        lines = process.stderr.strip().splitlines()
        assert len(lines) == 1, process.stderr
        assert "Traceback" not in process.stderr
        assert str(path) in lines[0] and expected in lines[0], lines[0]
        assert "keras" not in process.stdout


def test_base_cycle_is_detected(tmp_path):
    write(tmp_path, "a.yaml", "base: b.yaml\n")
    write(tmp_path, "b.yaml", "base: a.yaml\n")
    process = kerasboost("validate", str(tmp_path / "a.yaml"))
    assert process.returncode == 2
    assert "base: cycle" in process.stderr and process.stderr.count("\n") == 1


def test_missing_base_names_the_file(tmp_path):
    path = write(tmp_path, "child.yaml", "base: missing.yaml\n")
    with pytest.raises(RecipeError, match=r"child.yaml: base: file not found: .*missing.yaml"):
        load_recipe(path)


def test_base_inheritance_merges_sections_deeply(tmp_path):
    write(
        tmp_path,
        "base.yaml",
        "name: parent\ntrain:\n  steps: 7\n  batch_size: 4\nmodel:\n  config:\n    num_layers: 3\n",
    )
    sub = tmp_path / "sub"
    sub.mkdir()
    child = write(sub, "child.yaml", "base: ../base.yaml\nname: child\ntrain:\n  batch_size: 8\n")
    recipe = load_recipe(child)
    assert (recipe.name, recipe.train.steps, recipe.train.batch_size, recipe.model.config.num_layers) == (
        "child",
        7,
        8,
        3,
    )


def test_overrides_are_typed_by_the_schema(tmp_path):
    path = write(tmp_path, "r.yaml", "train:\n  steps: 5\n")
    recipe = load_recipe(
        path, ["train.batch_size=8", "train.learning_rate=3e-4", "data.lowercase=false", "backend=jax"]
    )
    assert recipe.train.batch_size == 8 and isinstance(recipe.train.batch_size, int)
    assert recipe.train.learning_rate == pytest.approx(3e-4)
    assert recipe.data.lowercase is False
    assert recipe.backend == "jax"


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.batchsize=8", "--set train.batchsize: unknown key 'batchsize' in 'train' (did you mean 'batch_size'?)"),
        ("optimizer.lr=1", "--set optimizer.lr: unknown key 'optimizer' in the recipe"),
        ("train.steps.x=1", "--set train.steps.x: 'train.steps' is a value, not a section"),
        ("train.steps", "--set train.steps: expected KEY.PATH=VALUE"),
        ("train.steps=-4", "train.steps: Input should be greater than 0"),
        (
            "train.steps_per_execution=8",
            "train: steps_per_execution (8) must divide the 100 micro-batches of an evaluation period",
        ),
    ],
)
def test_bad_override_exits_2(tmp_path, override, expected):
    path = write(tmp_path, "r.yaml", "name: r\n")
    process = kerasboost("show", str(path), "--set", override)
    assert process.returncode == 2
    assert process.stderr.strip().splitlines() == [process.stderr.strip()]
    assert expected in process.stderr


def test_show_prints_the_resolved_recipe(tmp_path):
    path = write(tmp_path, "r.yaml", "name: shown\n")
    process = kerasboost("show", str(path), "--set", "train.steps=9")
    assert process.returncode == 0
    assert "name: shown" in process.stdout and "steps: 9" in process.stdout and "batch_size: 32" in process.stdout


def test_missing_recipe_file(tmp_path):
    process = kerasboost("validate", str(tmp_path / "nope.yaml"))
    assert process.returncode == 2 and "nope.yaml: recipe file not found" in process.stderr


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]\n" for previous, name in zip("abcdefgh", "bcdefghi")
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", "the recipe is empty"),
        ("# nothing but a comment\n\n", "the recipe is empty"),
        (BOMB, "anchors and aliases expand to more than 100,000 values"),
        ("a: &a [*a]\n", "anchors and aliases expand to more than"),
        ("task: mlm\n" + "#" * (1 << 20) + "\n", "a recipe holds at most 1,048,576"),
    ],
    ids=["empty", "comment-only", "billion-laughs", "self-alias", "too-big"],
)
def test_hostile_recipe_is_refused_quickly_in_one_line(tmp_path, text, expected):
    path = write(tmp_path, "hostile.yaml", text)
    for command in ("validate", "run"):
        started = time.perf_counter()
        process = kerasboost(command, str(path), backend="tensorflow")
        assert time.perf_counter() - started < 10  # a Python start-up, not the expansion
        assert process.returncode == 2, process.stderr
        assert process.stderr.strip().splitlines() == [f"error: {path}: " + process.stderr.split(": ", 2)[2].strip()]
        assert expected in process.stderr and "Traceback" not in process.stderr


def test_an_alias_bomb_is_refused_within_a_second(tmp_path):
    path = write(tmp_path, "bomb.yaml", BOMB)
    started = time.perf_counter()
    with pytest.raises(RecipeError, match="expand to more than"):
        load_recipe(path)
    assert time.perf_counter() - started < 1.0
