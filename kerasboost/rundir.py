"""The run directory: where one run keeps its recipe, vocabulary, logs, checkpoints and exports.

runs/<name>/<timestamp>/        (or --output-dir)
    recipe.yaml                 the fully resolved recipe
    vocabulary.txt              BERT's WordPiece vocabulary (GPT-2: vocabulary.json + merges.txt)
    labels.json                 classification: label names, index = class id
    metrics.jsonl               one line per evaluation (step 0 is before training)
    logs/train, logs/validation TensorBoard event files
    checkpoints/step-NNNNNNNN/  model + optimizer weights and the step, for --resume
    preset/                     keras-hub preset of the trained backbone (adapters merged) and tokenizer
    adapter/                    with peft: the adapter alone (adapter_config.json + safetensors)
runs/<name>/latest              link to the newest run of that name
"""

from __future__ import annotations

import datetime
import os
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
    return RunDir(root.resolve())


def preset_directory(path: str) -> Path:
    """`path` itself, or the preset/ export inside it when `path` is a kerasboost run directory
    (so `model.preset: runs/<name>/latest` works)."""
    path = Path(path)
    return path / "preset" if (path / "preset" / "config.json").is_file() else path
