"""CLI behaviour that needs no training: light imports, backend precedence, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import ROOT, backend_env, kerasboost

from kerasboost.backend import resolve_backend
from kerasboost.errors import InputError

HEAVY = ("keras", "keras_hub", "tensorflow", "jax", "torch")


@pytest.mark.parametrize("args", [["--help"], ["validate", "recipes/mlm.yaml"], ["show", "recipes/mlm.yaml"], ["recipes"], ["--version"]])
def test_light_commands_import_no_ml_library(args):
    code = (
        "import sys\nfrom kerasboost.cli import cli\n"
        f"try:\n    cli.main({args!r}, standalone_mode=False)\nexcept SystemExit:\n    pass\n"
        f"print('LOADED', sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    process = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=backend_env(None))
    assert process.returncode == 0, process.stderr
    assert "LOADED []" in process.stdout


def test_version_and_recipes_listing():
    assert kerasboost("--version").stdout.startswith("kerasboost, version ")
    listing = kerasboost("recipes")
    assert listing.returncode == 0 and "mlm.yaml" in listing.stdout and "masked-language" in listing.stdout


def test_backend_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    assert resolve_backend(None, None) == "tensorflow"
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "torch"}))
    assert resolve_backend(None, None) == "torch"
    assert resolve_backend(None, "jax") == "jax"
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    assert resolve_backend(None, "jax") == "tensorflow"
    assert resolve_backend("torch", "jax") == "torch"
    monkeypatch.setenv("KERAS_BACKEND", "theano")
    with pytest.raises(InputError, match="KERAS_BACKEND: unknown backend 'theano'"):
        resolve_backend(None, None)


def test_bad_backend_flag_is_a_usage_error():
    process = kerasboost("run", "recipes/mlm.yaml", "--backend", "mxnet")
    assert process.returncode == 2
    assert len(process.stderr.strip().splitlines()) == 1 and "mxnet" in process.stderr


def test_unknown_command_is_a_usage_error():
    process = kerasboost("trian")
    assert process.returncode == 2 and "No such command 'trian'" in process.stderr


def test_output_dir_holding_a_run_is_refused_without_losing_it(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text("precious\n")
    process = kerasboost("run", "recipes/mlm.yaml", "--output-dir", str(out), backend="tensorflow")
    assert process.returncode == 2 and "already holds a run" in process.stderr
    assert len(process.stderr.strip().splitlines()) == 1
    assert (out / "metrics.jsonl").read_text() == "precious\n"


def test_resume_without_a_run_is_an_input_error(tmp_path):
    process = kerasboost("run", "recipes/mlm.yaml", "--resume", "--output-dir", str(tmp_path / "none"), backend="tensorflow")
    assert process.returncode == 2 and "nothing to resume" in process.stderr
