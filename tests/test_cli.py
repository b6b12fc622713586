"""CLI behaviour that needs no training: light imports, backend precedence, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, backend_env, kerasboost

from kerasboost.backend import resolve_backend
from kerasboost.errors import InputError

HEAVY = ("keras", "keras_hub", "tensorflow", "jax", "torch")


@pytest.mark.parametrize(
    "args", [["--help"], ["validate", "recipes/mlm.yaml"], ["show", "recipes/mlm.yaml"], ["recipes"], ["--version"]]
)
def test_light_commands_import_no_ml_library(args):
    code = (
        "import sys\nfrom kerasboost.cli import cli\n"
        f"try:\n    cli.main({args!r}, standalone_mode=False)\nexcept SystemExit:\n    pass\n"
        f"print('LOADED', sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    process = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=backend_env(None)
    )
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


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["--nproc", "2", "recipes/mlm.yaml", "--backend", "torch"],
            "--nproc 2: distribution.strategy is none; set distribution.strategy=data_parallel",
        ),
        (
            ["recipes/mlm_model_parallel.yaml", "--backend", "torch"],
            "model_parallel needs the jax backend (keras.distribution); on torch use data_parallel",
        ),
        (["recipes/mlm_model_parallel.yaml", "--backend", "tensorflow"], "on tensorflow use data_parallel"),
    ],
)
def test_impossible_distribution_is_refused_before_anything_loads(args, expected, tmp_path):
    process = kerasboost("run", *args, "--output-dir", str(tmp_path / "run"))
    assert process.returncode == 2, process.stderr
    assert len(process.stderr.strip().splitlines()) == 1 and expected in process.stderr, process.stderr
    assert not (tmp_path / "run").exists()


def test_output_dir_holding_a_run_is_refused_without_losing_it(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text("precious\n")
    process = kerasboost("run", "recipes/mlm.yaml", "--output-dir", str(out), backend="tensorflow")
    assert process.returncode == 2 and "already holds a run" in process.stderr
    assert len(process.stderr.strip().splitlines()) == 1
    assert (out / "metrics.jsonl").read_text() == "precious\n"


def test_resume_without_a_run_is_an_input_error(tmp_path):
    process = kerasboost(
        "run", "recipes/mlm.yaml", "--resume", "--output-dir", str(tmp_path / "none"), backend="tensorflow"
    )
    assert process.returncode == 2 and "nothing to resume" in process.stderr


@pytest.mark.parametrize(
    "content, expected",
    [(b"\n\n", "data.source: no documents found in"), (b"\xff\xfe\n\xfa\n", "data.source: no documents found in")],
    ids=["empty", "not-utf8"],
)
def test_bad_data_is_a_one_line_error_that_writes_nothing(tmp_path, content, expected):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(content)
    out = tmp_path / "run"
    process = kerasboost(
        "run", "recipes/mlm.yaml", "--output-dir", str(out), "--set", f"data.source={corpus}", backend="tensorflow"
    )
    assert process.returncode == 2, process.stderr
    assert process.stderr.strip().splitlines() == [process.stderr.strip()] and expected in process.stderr
    assert not out.exists()


def test_missing_jsonl_field_names_the_line(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"body": "x"}\n')
    process = kerasboost(
        "run",
        "recipes/mlm.yaml",
        "--output-dir",
        str(tmp_path / "run"),
        "--set",
        f"data.source={corpus}",
        backend="tensorflow",
    )
    assert process.returncode == 2 and f"{corpus}:1: no field 'text' (data.field); found: body" in process.stderr


def test_batch_larger_than_the_data_is_an_input_error(tmp_path):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("\n\n".join(f"document {i} with a few words" for i in range(10)))
    args = ["run", "recipes/mlm.yaml", "--output-dir", str(tmp_path / "run"), "--set", f"data.source={corpus}"]
    process = kerasboost(
        *args, "--set", "data.sequence_length=16", "--set", "train.batch_size=1000", backend="tensorflow"
    )
    assert process.returncode == 2 and "train.batch_size: a batch of 1000 is larger than" in process.stderr
    assert "Traceback" not in process.stderr


def test_runtime_failure_exits_1_and_debug_shows_the_traceback(tmp_path):
    preset = tmp_path / "broken_preset"
    preset.mkdir()
    (preset / "config.json").write_text("{ not json")
    args = [
        "run",
        "recipes/mlm.yaml",
        "--output-dir",
        str(tmp_path / "run"),
        "--set",
        f"model.preset={preset}",
        "--set",
        "data.max_documents=50",
    ]
    plain = kerasboost(*args, backend="tensorflow")
    assert plain.returncode == 1, plain.stderr
    assert plain.stderr.strip().splitlines()[-1].startswith("error: ") and "--debug" in plain.stderr
    assert "Traceback" not in plain.stderr
    debug = kerasboost("--debug", *args, "--output-dir", str(tmp_path / "run2"), backend="tensorflow")
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr


def test_bundled_recipes_run_by_name_and_copy_with_their_bases(tmp_path):
    shown = kerasboost("show", "lora_classify.yaml", cwd=tmp_path)
    assert shown.returncode == 0 and "task: classification" in shown.stdout, shown.stderr
    copied = kerasboost("recipes", "--copy", "lora_classify", str(tmp_path / "mine"))
    assert copied.returncode == 0, copied.stderr
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["classify.yaml", "lora_classify.yaml"]
    assert kerasboost("validate", str(tmp_path / "mine" / "lora_classify.yaml")).returncode == 0
    again = kerasboost("recipes", "--copy", "lora_classify", str(tmp_path / "mine"))
    assert again.returncode == 2 and again.stderr.strip().splitlines() == [
        f"error: --copy lora_classify: {tmp_path / 'mine' / 'lora_classify.yaml'} already exists; nothing was written"
    ]
    unknown = kerasboost("recipes", "--copy", "nope")
    assert unknown.returncode == 2 and "no bundled recipe of that name (bundled: bert_pretrain" in unknown.stderr


def test_the_wheel_ships_the_recipes(tmp_path):
    """`pip wheel` of the project: the recipes are package data, so an installed `kerasboost recipes` lists them."""
    import zipfile

    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("kerasboost-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {Path(name).name for name in names if name.startswith("kerasboost/recipes/")}
    assert shipped == {path.name for path in (ROOT / "recipes").glob("*.yaml")}, names


def test_prepare_writes_a_store_that_a_second_prepare_reuses_and_refuses_a_corrupt_source(tmp_path):
    import gzip

    lines = [f"document {i} reads a few words about the store and its rows" for i in range(400)]
    corpus = tmp_path / "corpus.txt.gz"
    corpus.write_bytes(gzip.compress("\n\n".join(lines).encode("utf-8")))
    args = ["prepare", "recipes/mlm.yaml", "--set", f"data.source={corpus}", "--set", "data.vocabulary_size=200"]
    args += ["--set", "data.sequence_length=16", "--set", f"data.store={tmp_path / 'store'}", "--json"]
    first = kerasboost(*args, backend="tensorflow")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert summary["documents"] == 400 and not summary["reused"] and (tmp_path / "store" / "manifest.json").is_file()
    again = json.loads(kerasboost(*args, backend="tensorflow").stdout.strip().splitlines()[-1])
    assert again["reused"] and again["train_rows"] == summary["train_rows"]
    broken = tmp_path / "broken.txt.gz"
    broken.write_bytes(corpus.read_bytes()[:-20])
    args[3] = f"data.source={broken}"
    args[-2] = f"data.store={tmp_path / 'other'}"
    process = kerasboost(*args, backend="tensorflow")
    assert process.returncode == 2 and len(process.stderr.strip().splitlines()) == 1, process.stderr
    assert f"{broken}: truncated or corrupt gzip data" in process.stderr
    assert not (tmp_path / "other").exists()


def test_a_second_run_on_a_locked_run_directory_is_refused(tmp_path):
    import fcntl

    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text("task: mlm\n")
    with (run / ".lock").open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("pid 4242\n")
        held.flush()
        process = kerasboost(
            "run", "recipes/mlm.yaml", "--resume", "--output-dir", str(run), "--set", "data.max_documents=50"
        )
    assert process.returncode == 2, process.stderr
    assert process.stderr.strip().splitlines() == [
        f"error: {run.resolve()}: another kerasboost run (pid 4242) is writing this run directory"
    ]
    assert sorted(p.name for p in run.iterdir()) == [".lock", "recipe.yaml"]


def test_a_run_that_fails_before_its_first_step_leaves_nothing(tmp_path):
    broken = tmp_path / "checkpoint"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "bert", "architectures": ["BertForMaskedLM"]}')
    out = tmp_path / "run"
    args = ["run", "recipes/mlm.yaml", "--output-dir", str(out), "--set", f"model.preset={broken}"]
    args += ["--set", "data.max_documents=50", "--set", "data.vocabulary_size=200"]
    first = kerasboost(*args, backend="torch")
    assert first.returncode in (1, 2) and len(first.stderr.strip().splitlines()) == 1, first.stderr
    assert not out.exists()
    again = kerasboost(*args, backend="torch")
    assert "already holds a run" not in again.stderr and not out.exists()


def test_an_unwritable_run_directory_is_one_line_with_exit_1(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    process = kerasboost(
        "run", "recipes/mlm.yaml", "--output-dir", str(blocker / "run"), "--set", "data.max_documents=50"
    )
    assert process.returncode == 1, process.stderr
    assert process.stderr.strip().splitlines() == [
        f"error: {blocker / 'run'}: Not a directory (run with --debug for the traceback)"
    ]
