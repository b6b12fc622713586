"""kerasboost: one YAML recipe trains a language model on TensorFlow, JAX or PyTorch."""

from kerasboost.recipe import Recipe, load_recipe
from kerasboost.version import __version__

__all__ = ["Recipe", "load_recipe", "run", "__version__"]


def run(recipe: Recipe, **kwargs):
    """Trains `recipe` (see `kerasboost.runner.run`); imported lazily to keep `import kerasboost` light."""
    from kerasboost.runner import run as _run

    return _run(recipe, **kwargs)
