"""The run directory: where one run keeps its recipe, vocabulary, logs, checkpoints and exports.

runs/<name>/<timestamp>/        (or --output-dir)
    recipe.yaml                 the fully resolved recipe
    vocabulary.txt              BERT's WordPiece vocabulary (GPT-2: vocabulary.json + merges.txt)
    labels.json                 classification: label names, index = class id
    metrics.jsonl               one line per evaluation (step 0 is before training)
    outcome.json                the final step, why the run ended, the best step of each watched metric
    logs/train, logs/validation TensorBoard event files
    checkpoints/step-NNNNNNNN/  model + optimizer weights, random state and the step, for --resume
    checkpoints/best/           with checkpoint.best: the best evaluation's checkpoint (exports use it)
    .lock                       held by the run writing this directory
    preset/                     keras-hub preset of the trained backbone (adapters merged) and tokenizer
    adapter/                    with peft: the adapter alone (adapter_config.json + safetensors)
runs/<name>/latest              link to the newest run of that name
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from kerasboost.errors import InputError

RUNS_ROOT = Path("runs")


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def recipe_file(self) -> Path:
        return self.root / "recipe.yaml"

    @property
    def vocabulary_file(self) -> Path:
        return self.root / "vocabulary.txt"

    @property
    def bpe_vocabulary_file(self) -> Path:
        return self.root / "vocabulary.json"

    @property
    def merges_file(self) -> Path:
        return self.root / "merges.txt"

    @property
    def labels_file(self) -> Path:
        return self.root / "labels.json"

    @property
    def generations_file(self) -> Path:
        return self.root / "generations.jsonl"

    @property
    def outcome_file(self) -> Path:
        return self.root / "outcome.json"

    @property
    def metrics_file(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def preset(self) -> Path:
        return self.root / "preset"

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"


def new_run_dir(name: str, output_dir: str | None = None) -> RunDir:
    """Creates a fresh run directory; an existing non-empty `output_dir` is refused, never overwritten."""
    if output_dir is not None:
        root = Path(output_dir)
        if root.exists() and any(root.iterdir()):
            raise InputError(
                f"--output-dir: {root} already holds a run; add --resume to continue it, or choose another directory"
            )
        root.mkdir(parents=True, exist_ok=True)
        return RunDir(root)
    parent = RUNS_ROOT / name
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    root, suffix = parent / stamp, 1
    while root.exists():
        root, suffix = parent / f"{stamp}-{suffix}", suffix + 1
    root.mkdir(parents=True)
    latest = parent / "latest"
    if latest.is_symlink() or latest.exists():
        latest.unlink()
    os.symlink(root.name, latest)
    return RunDir(root)


def existing_run_dir(name: str, output_dir: str | None = None) -> RunDir:
    """The run that `--resume` continues: `output_dir`, else runs/<name>/latest."""
    root = Path(output_dir) if output_dir is not None else RUNS_ROOT / name / "latest"
    if not root.is_dir():
        if output_dir is not None:
            raise InputError(f"--output-dir: {root} is not a run directory, nothing to resume")
        raise InputError(f"--resume: no earlier run of '{name}' to continue ({root} does not exist)")
    if not (root / "recipe.yaml").is_file():
        raise InputError(f"--resume: {root} holds no recipe.yaml: it is not a kerasboost run directory")
    return RunDir(root.resolve())


def preset_directory(path: str) -> Path:
    """`path` itself, or the preset/ export inside it when `path` is a kerasboost run directory
    (so `model.preset: runs/<name>/latest` works)."""
    path = Path(path)
    return path / "preset" if (path / "preset" / "config.json").is_file() else path


@contextlib.contextmanager
def locked(run: RunDir):
    """Holds an exclusive lock on the run directory while a run writes it; the operating system releases
    it when the process ends, however it ends, so a killed run never leaves a stale lock."""
    handle = (run.root / ".lock").open("a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise InputError(f"{run.root}: another kerasboost run ({holder}) is writing this run directory") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        yield run
    finally:
        handle.close()


def discard(run: RunDir) -> None:
    """Removes a run directory that never reached its first step (and `latest` if it pointed there), so a
    retry starts clean."""
    shutil.rmtree(run.root, ignore_errors=True)
    latest = run.root.parent / "latest"
    if latest.is_symlink() and os.readlink(latest) == run.root.name:
        latest.unlink()
