"""Tasks: what a recipe's `task:` builds from documents and puts on top of the backbone.

Every task returns the same `Task` (tasks/task.py), so reading data and the training loop are shared and
never copied per task.
"""

from __future__ import annotations

from kerasboost.recipe import Recipe
from kerasboost.rundir import RunDir
from kerasboost.tasks import bert_pretraining, causal_lm, classification, mlm
from kerasboost.tasks.task import Task

_BUILDERS = {
    "mlm": mlm.prepare,
    "bert_pretraining": bert_pretraining.prepare,
    "causal_lm": causal_lm.prepare,
    "classification": classification.prepare,
}


def prepare_task(recipe: Recipe, run: RunDir, train_docs, validation_docs, report) -> Task:
    """Tokenises the documents and builds the model for `recipe.task`."""
    return _BUILDERS[recipe.task](recipe, run, train_docs, validation_docs, report)


def needs_labels(recipe: Recipe) -> bool:
    return recipe.task == "classification"
