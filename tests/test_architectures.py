"""What is specific to one architecture lives in kerasboost/architectures/ and nowhere else."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from helpers import ROOT

from kerasboost.architectures import NAMES, architecture, serving

# What naming an architecture looks like in code: its name as a string literal, or a keras-hub class of it.
NAMING = {
    name: re.compile(
        rf"""["']{name}["']|\b{re.escape(architecture(name).backbone_class)}\b|\b{re.escape(architecture(name).tokenizer_class)}\b"""
    )
    for name in NAMES
}


@pytest.mark.parametrize("name", NAMES)
def test_no_module_outside_architectures_names_one(name):
    offenders = []
    for path in sorted((ROOT / "kerasboost").rglob("*.py")):
        if "architectures" in path.parts:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if NAMING[name].search(line.split("#")[0]) and not line.lstrip().startswith(('"""', "`")):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_every_task_is_served_and_every_architecture_serves_classification():
    for task in ("mlm", "bert_pretraining", "causal_lm", "classification"):
        assert serving(task), task
    assert all("classification" in architecture(name).tasks for name in NAMES)


def test_the_recipe_schema_lists_the_architectures_without_importing_an_ml_library():
    code = (
        "import sys; from kerasboost.recipe import ModelConfig; import kerasboost.architectures as a; "
        "[a.architecture(n) for n in a.NAMES]; "
        "print(sorted(m for m in ('keras', 'tensorflow', 'jax', 'torch', 'keras_hub') if m in sys.modules))"
    )
    process = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert process.returncode == 0 and process.stdout.strip() == "[]", process.stdout + process.stderr


def test_unknown_architecture_is_a_key_error():
    with pytest.raises(KeyError, match="unknown architecture 'llama'"):
        architecture("llama")
