"""Chaos test of `kerasboost run`: kills, signals, NaN, a corrupt checkpoint and a full disk.

For each backend: one uninterrupted reference run of recipes/mlm.yaml (tiny model, dropout 0.1,
checkpoints every few steps), then
  kill     SIGKILL at N seeded random moments (one in five during start-up, the rest while training),
           `--resume` after each; final weights against the reference
  term     SIGTERM at N seeded random moments: exit 143 with a checkpoint at the step it stopped, resume
  nan      learning rate 1e6: exit 1 in one line, no checkpoint or export holds a non-finite weight
  skip     the same with `train.nonfinite: skip`: updates skipped and counted, then exit 1 in one line
  corrupt  the reference's newest checkpoint truncated: `--resume` warns, takes the one before, and ends
           bitwise equal to the reference
  disk     the run directory on a small tmpfs (mounted when this process may, else ENOSPC injected into
           the checkpoint write): exit 1 in one line, the previous checkpoint intact and loadable

    python tools/chaos.py                      # every case, 10 kills, every backend
    python tools/chaos.py --quick --backend jax

Weights are compared as stored (model and optimizer variables of the final checkpoint's
model.weights.h5): max |Δw| and whether every array is equal to the bit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# As the shell had it: TensorFlow (which tensorboard's reader imports) sets logging variables on import
# that would change what the runs under test print.
_ENV = dict(os.environ)
BACKENDS = ("tensorflow", "jax", "torch")
TINY = [
    "train.precision=float32",
    "model.config.num_layers=2",
    "model.config.num_heads=2",
    "model.config.hidden_dim=32",
    "model.config.intermediate_dim=64",
    "model.config.max_sequence_length=32",
    "model.config.dropout=0.1",
    "data.sequence_length=32",
    "data.vocabulary_size=1000",
    "data.max_documents=400",
    "train.batch_size=16",
    "train.warmup_steps=2",
    "logging.every_steps=1",
    "checkpoint.keep=3",
]
# Injected where no tmpfs can be mounted: the checkpoint write fails as a full disk makes it fail.
_DISK_FULL = """
import errno, os, sys
from kerasboost.backend import select_backend
select_backend(os.environ["KERAS_BACKEND"])  # as the CLI does: TensorFlow's start-up quiet
import keras
def full(self, path, *args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", path)
keras.Model.save_weights = full
sys.argv[0] = "kerasboost"
from kerasboost.cli import main
main()
"""


def settings(steps: int, every: int, *more: str) -> list[str]:
    pairs = [*TINY, f"train.steps={steps}", f"train.eval_every={every}", f"checkpoint.every_steps={every}", *more]
    return [arg for pair in pairs for arg in ("--set", pair)]


def command(run: Path, args: list[str], resume: bool = False, inject: str | None = None) -> list[str]:
    head = [sys.executable, "-c", inject] if inject else [sys.executable, "-m", "kerasboost"]
    return [*head, "run", "recipes/mlm.yaml", "--output-dir", str(run), *args, *(["--resume"] if resume else [])]


def start(run: Path, args: list[str], backend: str, resume: bool = False, inject: str | None = None):
    env = {**_ENV, "KERAS_BACKEND": backend}
    return subprocess.Popen(
        command(run, args, resume, inject), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(process, timeout: float = 600) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def weights(run: Path, step: int) -> dict[str, np.ndarray]:
    found = {}
    with h5py.File(run / "checkpoints" / f"step-{step:08d}" / "model.weights.h5", "r") as handle:
        handle.visititems(
            lambda name, item: found.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None
        )
    return found


def compare(a: Path, b: Path, step: int) -> tuple[float, bool]:
    left, right = weights(a, step), weights(b, step)
    if left.keys() != right.keys():
        return float("inf"), False
    diffs = [np.max(np.abs(left[k].astype("float64") - right[k].astype("float64")), initial=0.0) for k in left]
    bitwise = all(left[k].tobytes() == right[k].tobytes() for k in left)
    return float(max(diffs)), bitwise


def logged_points(run: Path) -> tuple[set, list]:
    """Every (split, tag, step) in the run's TensorBoard event files, and those logged more than once."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    seen, twice = set(), []
    for events in sorted((run / "logs").glob("*/events.out.tfevents.*")):
        for event in EventFileLoader(str(events)).Load():
            for value in event.summary.value:
                point = (events.parent.name, value.tag, event.step)
                if point in seen and value.tag not in ("recipe", "distribution"):
                    twice.append(point)
                seen.add(point)
    return seen, twice


def newest_step(run: Path) -> int | None:
    steps = sorted(p.name for p in (run / "checkpoints").glob("step-*")) if (run / "checkpoints").is_dir() else []
    return int(steps[-1].split("-")[1]) if steps else None


def _training_started(process) -> threading.Event:
    """Set when the run starts training; the reader thread keeps stdout flowing."""
    started, lines = threading.Event(), []

    def read():
        for line in process.stdout:
            lines.append(line)
            if line.startswith("step "):
                process.last_step_at = time.perf_counter()
            if line.startswith("training: "):  # printed just before the first step, on resume too
                started.set()
        started.set()

    process.output = lines
    threading.Thread(target=read, daemon=True).start()
    return started


def finish_started(process, timeout: float = 600) -> tuple[int, str, str]:
    err = process.stderr.read()
    process.wait(timeout=timeout)
    time.sleep(0.1)
    return process.returncode, "".join(process.output), err


def interrupted(
    case: str, backend: str, reference: Path, seconds: float, train_seconds: float, args, steps, kills, rng, workdir
) -> dict:
    """Stops a run `kills` times at seeded random moments with SIGKILL (`kill`) or SIGTERM (`term`),
    resuming after each, and compares the finished run with the reference."""
    run = workdir / f"{case}-{backend}"
    shutil.rmtree(run, ignore_errors=True)
    number = signal.SIGKILL if case == "kill" else signal.SIGTERM
    stops, problems = [], []
    for stop in range(kills):
        if newest_step(run) == steps:  # finished before this stop: start over, so that every stop counts
            shutil.rmtree(run)
        resume = (run / "recipe.yaml").is_file()
        process = start(run, args, backend, resume=resume)
        training = _training_started(process)
        # Mostly while training (from its first step line); one SIGKILL in five during start-up instead.
        in_start_up = case == "kill" and rng.random() < 0.2
        # A step drawn between the newest checkpoint and the end, reached at the reference's pace.
        left = 1.0 - (newest_step(run) or 0) / steps
        delay = rng.uniform(0.0, seconds - train_seconds if in_start_up else train_seconds * left)
        if case == "term" and stop == 0:
            delay = 0.0  # the first SIGTERM as training starts: always inside the run's handler
        began = time.perf_counter() if in_start_up else (training.wait(timeout=600) and time.perf_counter())
        while process.poll() is None and time.perf_counter() - began < delay:
            time.sleep(0.05)
        if process.poll() is None:
            process.send_signal(number)
        code, out, err = finish_started(process)
        moment = f"{delay:.1f} s into " + ("start-up" if in_start_up else "training")
        stops.append({"at": moment, "exit": code, "checkpoint": newest_step(run)})
        if case == "term" and code == 143:
            said = [line for line in err.splitlines() if line.startswith("error: SIGTERM at step")]
            step = int(said[0].split("step ")[1].split(":")[0]) if said else None
            if step is None or (newest_step(run) != step and not (step == 0 and "no checkpoint" in said[0])):
                problems.append(f"SIGTERM: no checkpoint at the step it stopped ({said}, newest {newest_step(run)})")
        elif code not in (0, -number, 128 + number) and not (case == "term" and code == -signal.SIGTERM):
            problems.append(f"exit {code}: {err.strip().splitlines()[-1:]}")
    if case == "term" and not any(stop["exit"] == 143 for stop in stops):
        problems.append("no SIGTERM reached a running step (none exited 143)")
    code, out, err = finish(start(run, args, backend, resume=(run / "recipe.yaml").is_file()))
    if code != 0:
        problems.append(f"final resume: exit {code}: {err.strip().splitlines()[-1:]}")
        return {"case": case, "backend": backend, "stops": stops, "problems": problems}
    delta, bitwise = compare(reference, run, steps)
    metrics = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    expected = [json.loads(line)["step"] for line in (reference / "metrics.jsonl").read_text().splitlines()]
    if metrics != expected:
        problems.append(f"metrics.jsonl steps {metrics}, uninterrupted {expected}")
    (points, twice), (expected_points, _) = logged_points(run), logged_points(reference)
    if twice or points != expected_points:
        problems.append(f"TensorBoard: {len(twice)} points logged twice, {len(points ^ expected_points)} differ")
    if not bitwise:
        problems.append(f"final weights differ from the uninterrupted run (max |dw| {delta:.3g})")
    return {
        "case": case,
        "backend": backend,
        "stops": stops,
        "max_abs_dw": delta,
        "bitwise": bitwise,
        "problems": problems,
    }


def nan_case(backend: str, args, workdir: Path) -> dict:
    run = workdir / f"nan-{backend}"
    shutil.rmtree(run, ignore_errors=True)
    started = time.perf_counter()
    code, out, err = finish(start(run, [*args, "--set", "train.learning_rate=1e6"], backend))
    lines = err.strip().splitlines()
    problems = []
    if code != 1 or len(lines) != 1 or "loss is" not in lines[0] and "NaN" not in lines[0]:
        problems.append(f"exit {code}, stderr {lines[-3:]}")
    if (run / "preset").exists():
        problems.append("a preset was exported")
    for step_dir in (run / "checkpoints").glob("step-*") if (run / "checkpoints").is_dir() else []:
        stored = weights(run, int(step_dir.name.split("-")[1]))
        if not all(np.isfinite(v).all() for v in stored.values() if v.dtype.kind == "f"):
            problems.append(f"{step_dir.name} holds non-finite weights")
    evaluations = [int(line.split()[1].split("/")[0]) for line in out.splitlines() if line.startswith("step ")]
    return {
        "case": "nan",
        "backend": backend,
        "exit": code,
        "said": lines[-1:],
        "seconds": round(time.perf_counter() - started, 1),
        "evaluations_before": evaluations,
        "problems": problems,
    }


def skip_case(backend: str, args, workdir: Path) -> dict:
    """`train.nonfinite: skip` with a learning rate that overflows: updates skipped, counted, then a stop."""
    run = workdir / f"skip-{backend}"
    shutil.rmtree(run, ignore_errors=True)
    more = ["train.learning_rate=1e6", "train.nonfinite=skip", "train.max_skipped_steps=1"]
    code, out, err = finish(start(run, [*args, *(a for pair in more for a in ("--set", pair))], backend))
    lines = err.strip().splitlines()
    problems = []
    if code != 1 or len(lines) != 1 or "steps skipped" not in lines[0]:
        problems.append(f"exit {code}, stderr {lines[-3:]}")
    if " skipped" not in out:
        problems.append("no evaluation reported a skipped step")
    for step_dir in (run / "checkpoints").glob("step-*") if (run / "checkpoints").is_dir() else []:
        stored = weights(run, int(step_dir.name.split("-")[1]))
        if not all(np.isfinite(v).all() for v in stored.values() if v.dtype.kind == "f"):
            problems.append(f"{step_dir.name} holds non-finite weights")
    return {"case": "skip", "backend": backend, "exit": code, "said": lines[-1:], "problems": problems}


def corrupt_case(backend: str, reference: Path, args, steps: int, every: int, workdir: Path) -> dict:
    run = workdir / f"corrupt-{backend}"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(reference, run, ignore=shutil.ignore_patterns(".lock"))
    newest = run / "checkpoints" / f"step-{steps:08d}" / "model.weights.h5"
    with newest.open("r+b") as handle:
        handle.truncate(newest.stat().st_size // 2)
    code, out, err = finish(start(run, args, backend, resume=True))
    problems = []
    if code != 0:
        problems.append(f"exit {code}: {err.strip().splitlines()[-1:]}")
        return {"case": "corrupt", "backend": backend, "problems": problems}
    warned = [line for line in out.splitlines() if line.startswith("warning:") and "damaged" in line]
    if len(warned) != 1 or f"at step {steps - every}" not in out:
        problems.append(f"expected one warning and a resume at step {steps - every}: {warned}")
    delta, bitwise = compare(reference, run, steps)
    if not bitwise:
        problems.append(f"final weights differ from the uninterrupted run (max |dw| {delta:.3g})")
    return {"case": "corrupt", "backend": backend, "said": warned, "bitwise": bitwise, "problems": problems}


def intact(checkpoint: Path) -> bool:
    """Every file of a checkpoint matches its manifest (what `--resume` verifies)."""
    manifest = json.loads((checkpoint / "manifest.json").read_text())["files"]
    return all(
        (checkpoint / name).stat().st_size == entry["bytes"]
        and hashlib.sha256((checkpoint / name).read_bytes()).hexdigest() == entry["sha256"]
        for name, entry in manifest.items()
    )


def _mount_tmpfs(directory: Path, size: int) -> bool:
    """Whether a tmpfs of `size` bytes could be mounted on `directory` (root, and `mount` present)."""
    try:
        command = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)]
        return subprocess.run(command, capture_output=True).returncode == 0
    except OSError:
        return False


def disk_case(backend: str, reference: Path, args, steps: int, every: int, workdir: Path, load: bool = True) -> dict:
    """The run directory on a tmpfs with room for the first checkpoint but not the second."""
    mount = workdir / f"disk-{backend}"
    shutil.rmtree(mount, ignore_errors=True)
    mount.mkdir(parents=True)
    checkpoint = sum(f.stat().st_size for f in (reference / "checkpoints" / f"step-{steps:08d}").iterdir())
    before = sum(f.stat().st_size for f in reference.rglob("*") if f.is_file() and "checkpoints" not in f.parts)
    size = before + int(checkpoint * 2.3)  # the first checkpoint, not a second beside it
    mounted = _mount_tmpfs(mount, size)
    run = mount / "run"
    try:
        if mounted:
            code, out, err = finish(start(run, args, backend))
        else:
            code, out, err = finish(start(run, args, backend, inject=_DISK_FULL))
        lines = err.strip().splitlines()
        problems = []
        if code != 1 or len(lines) != 1:
            problems.append(f"exit {code}, stderr {lines[-4:]}")
        kept = newest_step(run)
        if mounted and kept is None:
            problems.append("no checkpoint survived")
        if kept is not None and not intact(run / "checkpoints" / f"step-{kept:08d}"):
            problems.append(f"the checkpoint kept, step {kept}, does not match its manifest")
        if kept is not None and load:  # and it loads (left out by --quick: one process fewer per backend)
            check = subprocess.run(
                [sys.executable, "-m", "kerasboost", "eval", str(run)],
                cwd=ROOT,
                env={**_ENV, "KERAS_BACKEND": backend},
                capture_output=True,
                text=True,
            )
            if check.returncode != 0:
                problems.append(f"the checkpoint kept does not load: {check.stderr.strip().splitlines()[-1:]}")
        return {
            "case": "disk",
            "backend": backend,
            "filesystem": f"tmpfs {size:,} bytes" if mounted else "ENOSPC injected",
            "exit": code,
            "said": lines[-1:],
            "checkpoint_kept": kept,
            "problems": problems,
        }
    finally:
        if mounted:
            subprocess.run(["umount", str(mount)], capture_output=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default=",".join(BACKENDS))
    parser.add_argument("--cases", default="kill,term,nan,skip,corrupt,disk")
    parser.add_argument("--kills", type=int, default=10, help="random stops per kill/term case")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--every", type=int, default=10, help="evaluation and checkpoint period")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="1 stop per case, 12 steps (the suite's mode)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    options = parser.parse_args(argv)
    if options.quick:
        options.kills, options.steps, options.every = 1, 12, 4
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="kerasboost-chaos-"))
    cases = options.cases.split(",")
    rng = random.Random(options.seed)
    args = settings(options.steps, options.every)
    results = []
    print(f"chaos: seed {options.seed}, {options.kills} stops, {options.steps} steps, workdir {workdir}", flush=True)
    for backend in options.backend.split(","):
        reference = workdir / f"reference-{backend}"
        shutil.rmtree(reference, ignore_errors=True)
        started = time.perf_counter()
        process = start(reference, args, backend)
        _training_started(process).wait(timeout=600)
        training = time.perf_counter()
        code, _, err = finish_started(process)
        # From the start of training to its last evaluation: exports left out.
        seconds, train_seconds = time.perf_counter() - started, process.last_step_at - training
        if code != 0:
            raise SystemExit(f"reference run failed on {backend}: {err[-2000:]}")
        for case in cases:
            if case in ("kill", "term"):
                result = interrupted(
                    case, backend, reference, seconds, train_seconds, args, options.steps, options.kills, rng, workdir
                )
            elif case == "nan":
                result = nan_case(backend, args, workdir)
            elif case == "skip":
                result = skip_case(backend, args, workdir)
            elif case == "corrupt":
                result = corrupt_case(backend, reference, args, options.steps, options.every, workdir)
            else:
                result = disk_case(
                    backend, reference, args, options.steps, options.every, workdir, load=not options.quick
                )
            results.append(result)
            print(json.dumps(result), flush=True)
    failed = [r for r in results if r["problems"]]
    print(f"chaos: {len(results) - len(failed)} of {len(results)} cases held", flush=True)
    if options.json:
        options.json.write_text(json.dumps(results, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
