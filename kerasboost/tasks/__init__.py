"""Tasks: what a recipe's `task:` builds from documents and puts on top of the backbone.

Every task returns the same `Task` (tasks/task.py), so reading data and the training loop are shared and
never copied per task. Each task module's `build_model` makes the model alone, which is all a trained run
needs to be used (`task_model`): no corpus, no token store.
"""

from __future__ import annotations

from kerasboost.architectures import architecture
from kerasboost.data.prepare import PreparedData
from kerasboost.models.hugging_face import is_hugging_face_checkpoint, load_task_weights, open_checkpoint
from kerasboost.recipe import Recipe
from kerasboost.rundir import RunDir, preset_directory
from kerasboost.tasks import bert_pretraining, causal_lm, classification, mlm
from kerasboost.tasks.task import Task

_BUILDERS = {
    "mlm": mlm.prepare,
    "bert_pretraining": bert_pretraining.prepare,
    "causal_lm": causal_lm.prepare,
    "classification": classification.prepare,
}


_MODELS = {
    "mlm": mlm.build_model,
    "bert_pretraining": bert_pretraining.build_model,
    "causal_lm": causal_lm.build_model,
    "classification": classification.build_model,
}


def task_model(recipe: Recipe, tokenizer, labels: list[str] | None) -> Task:
    """The task's model for a trained run's weights to load into, without its data (`batches` is None)."""
    backbone, model = _MODELS[recipe.task](recipe, tokenizer.vocabulary_size(), labels)
    return Task(tokenizer, None, backbone, model, loss=None, metrics=None, summary=[])


def prepare_task(recipe: Recipe, run: RunDir, data: PreparedData) -> Task:
    """Builds the model for `recipe.task` over its prepared data; from a Hugging Face checkpoint, with
    every head of it that the task has (the summary says which)."""
    task = _BUILDERS[recipe.task](recipe, run, data)
    preset = preset_directory(recipe.model.preset) if recipe.model.preset else None
    if preset is not None and is_hugging_face_checkpoint(preset):
        task.summary += load_task_weights(task.model, open_checkpoint(preset, architecture(recipe.model.backbone)))
    return task
