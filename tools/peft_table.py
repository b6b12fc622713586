"""The fine-tuning methods side by side, as the AdaLoRA paper's table: full fine-tuning, LoRA r8, rsLoRA, DoRA,
AdaLoRA (target rank 8), Houlsby and Pfeiffer adapters (reduction 16), each on one pretrained backbone and
each with early stopping on validation macro-F1 (the best checkpoint's metrics are reported).

    python tools/peft_table.py                         # TensorFlow, the sizes below, into a temp workdir
    python tools/peft_table.py --backend jax --workdir /tmp/peft-table
    python tools/peft_table.py --quick                 # a few steps each: checks the tool, measures nothing

The backbone: `recipes/mlm.yaml` (BERT, 2 layers, hidden 128) pretrained here for --pretrain-steps on the
built-in corpus. The tasks: the built-in labelled set (`recipes/classify.yaml`, docstrings by package) and
a user-style CSV (`reviews.csv`, written here: three-way sentiment of short product reviews made from word
lists, with negations, so a bag of words is not enough, and 5 % of labels flipped). Each run is
`kerasboost run recipes/classify.yaml --set ...` in its own process; the exact command of each is printed.

Columns: trainable parameters (count and share of the model), validation accuracy and macro-F1 of the best
checkpoint (`checkpoint.best` on val_macro_f1), the step it came from, milliseconds per optimizer step
(the median of the evaluation periods after the first, which pays for compilation), the process's peak
RSS, and the optimizer state in the checkpoint (Adam's slots grow with the trainable parameters only).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name -> (recipe overrides, learning rate). Adapters take a higher rate than full fine-tuning (as in the
# papers: LoRA and AdaLoRA use 10x or more of full fine-tuning's).
METHODS: dict[str, tuple[list[str], float]] = {
    "full fine-tuning": ([], 5e-4),
    "LoRA r8": (["peft.method=lora", "peft.rank=8", "peft.alpha=16", "peft.targets=all-linear"], 2e-3),
    "rsLoRA r8": (
        ["peft.method=lora", "peft.rank=8", "peft.alpha=16", "peft.rslora=true", "peft.targets=all-linear"],
        2e-3,
    ),
    "DoRA r8": (["peft.method=dora", "peft.rank=8", "peft.alpha=16", "peft.targets=all-linear"], 2e-3),
    "AdaLoRA r12->8": (
        [
            "peft.method=adalora",
            "peft.alpha=16",
            "peft.targets=all-linear",
            "peft.adalora.init_rank=12",
            "peft.adalora.target_rank=8",
        ],
        2e-3,
    ),
    "Houlsby /16": (
        ["peft.method=bottleneck", "peft.bottleneck.placement=houlsby", "peft.bottleneck.reduction_factor=16"],
        2e-3,
    ),
    "Pfeiffer /16": (
        ["peft.method=bottleneck", "peft.bottleneck.placement=pfeiffer", "peft.bottleneck.reduction_factor=16"],
        2e-3,
    ),
}

POSITIVE = ["great", "excellent", "sturdy", "fast", "reliable", "comfortable", "bright", "quiet", "useful", "lovely"]
NEGATIVE = ["broken", "slow", "flimsy", "noisy", "useless", "dull", "faulty", "awkward", "cheap", "leaky"]
NEUTRAL = ["arrived", "packaged", "weighs", "measures", "contains", "ships", "includes", "comes", "uses", "has"]
ITEMS = ["kettle", "lamp", "chair", "charger", "blender", "backpack", "router", "monitor", "keyboard", "heater"]
FILLER = ["the", "it", "this", "was", "is", "really", "quite", "and", "my", "overall", "after", "a", "week"]


def write_reviews(path: Path, rows: int = 3000, seed: int = 0) -> Path:
    """Three-way sentiment (positive / negative / neutral): a review praises or faults its item, or only
    describes it; "not" before a quality word flips it, and 5 % of labels are flipped at random."""
    rng = random.Random(seed)
    lines = ["text,label"]
    for _ in range(rows):
        label = rng.choice(["positive", "negative", "neutral"])
        words = [rng.choice(FILLER) for _ in range(rng.randint(4, 9))] + [rng.choice(ITEMS)]
        if label == "neutral":
            words += [rng.choice(NEUTRAL), rng.choice(FILLER), rng.choice(ITEMS)]
        else:
            flip = rng.random() < 0.4
            pool = (
                (NEGATIVE if label == "positive" else POSITIVE)
                if flip
                else (POSITIVE if label == "positive" else NEGATIVE)
            )
            words += (
                (["not"] if flip else []) + [rng.choice(pool)] + [rng.choice(FILLER) for _ in range(rng.randint(1, 4))]
            )
        if rng.random() < 0.05:
            label = rng.choice([other for other in ("positive", "negative", "neutral") if other != label])
        lines.append(f"{' '.join(words)},{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


def run(command: list[str], backend: str, log: Path) -> tuple[int, float, float]:
    """Runs `command` on `backend`: exit code, wall seconds, peak RSS in MB (of that process alone)."""
    env = {**os.environ, "KERAS_BACKEND": backend}
    print("$ " + shlex.join(command), flush=True)
    started = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, time.perf_counter() - started, usage.ru_maxrss / 1024


def optimizer_bytes(run_dir: Path) -> int:
    """Bytes of optimizer state in the run's newest checkpoint."""
    import h5py

    checkpoint = sorted((run_dir / "checkpoints").glob("step-*"))[-1] / "model.weights.h5"
    total = 0
    with h5py.File(checkpoint, "r") as handle:

        def add(_, item):
            nonlocal total
            if isinstance(item, h5py.Dataset):
                total += item.size * item.dtype.itemsize

        handle["optimizer"].visititems(add)
    return total


def measure(run_dir: Path, log: Path, batch_tokens: int) -> dict:
    text = log.read_text()
    trainable = re.search(r"trainable ([\d,]+) of ([\d,]+) parameters", text)
    if trainable:
        count, total = (int(group.replace(",", "")) for group in trainable.groups())
    else:
        count = total = int(re.search(r"· ([\d,]+) parameters", text).group(1).replace(",", ""))
    outcome = json.loads((run_dir / "outcome.json").read_text())
    evaluations = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    best_step = outcome["best"]["step"]
    best = next(entry for entry in evaluations if entry["step"] == best_step)
    speeds = [entry["tokens_per_second"] for entry in evaluations[2:] if entry.get("tokens_per_second")]
    speeds = speeds or [entry["tokens_per_second"] for entry in evaluations if entry.get("tokens_per_second")]
    return {
        "trainable": count,
        "share": count / total,
        "accuracy": best["val_accuracy"],
        "macro_f1": best["val_macro_f1"],
        "best_step": best_step,
        "final_step": outcome["final_step"],
        "ms_per_step": 1000 * batch_tokens / statistics.median(speeds),
        "optimizer_mb": optimizer_bytes(run_dir) / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="tensorflow", choices=["tensorflow", "jax", "torch"])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--pretrain-steps", type=int, default=1500)
    parser.add_argument(
        "--steps", type=int, default=1200, help="the most fine-tuning steps (early stopping ends most runs sooner)"
    )
    parser.add_argument("--eval-every", type=int, default=60)
    parser.add_argument("--patience", type=int, default=4)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated names from the table")
    parser.add_argument(
        "--learning-rate", action="append", default=[], metavar="NAME=RATE", help="another rate for one method"
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.pretrain_steps, args.steps, args.eval_every = 4, 6, 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="peft-table-"))
    workdir.mkdir(parents=True, exist_ok=True)
    python = [sys.executable, "-m", "kerasboost"]
    seed = [f"seed={args.seed}"]
    pretrain = workdir / "pretrain"
    if not (pretrain / "preset").is_dir():
        sets = [*seed, f"train.steps={args.pretrain_steps}", f"train.eval_every={max(args.pretrain_steps // 5, 1)}"]
        code, _, _ = run(
            [*python, "run", "recipes/mlm.yaml", "--output-dir", str(pretrain), *_sets(sets)],
            args.backend,
            workdir / "pretrain.log",
        )
        if code:
            sys.exit(f"pretraining failed: see {workdir / 'pretrain.log'}")
    tasks = {
        "built-in topics": [],
        "reviews.csv": ["data.source=" + str(write_reviews(workdir / "reviews.csv")), "data.validation_split=0.15"],
    }
    batch_tokens = 32 * 128
    rates = {name: rate for name, (_, rate) in METHODS.items()}
    rates.update((name, float(rate)) for name, rate in (pair.rsplit("=", 1) for pair in args.learning_rate))
    results = []
    for task, task_sets in tasks.items():
        for name in args.methods.split(","):
            settings, rate = METHODS[name][0], rates[name]
            run_dir = workdir / re.sub(r"[^a-z0-9]+", "-", f"{task}-{name}".lower()).strip("-")
            sets = [
                *seed,
                *task_sets,
                f"model.preset={pretrain}",
                f"train.steps={args.steps}",
                f"train.eval_every={args.eval_every}",
                f"train.warmup_steps={args.eval_every}",
                f"train.learning_rate={rate}",
                f"checkpoint.every_steps={args.eval_every}",
                "checkpoint.keep=1",
                "checkpoint.best={metric: val_macro_f1, mode: max}",
                f"train.early_stopping={{metric: val_macro_f1, mode: max, patience: {args.patience}}}",
                "export.preset=false",
                *settings,
            ]
            if "peft.method" in " ".join(settings):
                sets.append("peft.modules_to_save=[classifier]")
            command = [*python, "run", "recipes/classify.yaml", "--output-dir", str(run_dir), *_sets(sets)]
            code, seconds, peak = run(command, args.backend, run_dir.with_suffix(".log"))
            row = {
                "task": task,
                "method": name,
                "learning_rate": rate,
                "command": shlex.join(command),
                "exit": code,
                "seconds": seconds,
                "peak_rss_mb": peak,
            }
            if code == 0:
                row.update(measure(run_dir, run_dir.with_suffix(".log"), batch_tokens))
            print(json.dumps(row), flush=True)
            results.append(row)
    (workdir / "results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in results))
    print(table(results, args))


def _sets(pairs: list[str]) -> list[str]:
    return [arg for pair in pairs for arg in ("--set", pair)]


def table(results: list[dict], args) -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    lines = [
        f"\n{datetime.date.today()} · commit {commit} · backend {args.backend} · seed {args.seed} · "
        f"pretraining {args.pretrain_steps} steps · at most {args.steps} steps, evaluation every {args.eval_every}, "
        f"early stopping patience {args.patience}",
        "",
        "| task | method | learning rate | trainable | % | accuracy | macro-F1 | % of full FT | best step / last "
        "| ms/step | peak RSS MB | optimizer MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    full = {row["task"]: row.get("macro_f1") for row in results if row["method"] == "full fine-tuning"}
    for row in results:
        if row["exit"]:
            lines.append(f"| {row['task']} | {row['method']} | failed (exit {row['exit']}) ||||||||||")
            continue
        relative = f"{100 * row['macro_f1'] / full[row['task']]:.0f}" if full.get(row["task"]) else "-"
        lines.append(
            f"| {row['task']} | {row['method']} | {row['learning_rate']:g} | {row['trainable']:,} | "
            f"{100 * row['share']:.2f} | "
            f"{row['accuracy']:.3f} | {row['macro_f1']:.3f} | {relative} | {row['best_step']} / {row['final_step']} | "
            f"{row['ms_per_step']:.1f} | {row['peak_rss_mb']:,.0f} | {row['optimizer_mb']:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
