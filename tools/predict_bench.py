"""Classification predict throughput: `kerasboost predict`'s path against a transformers `pipeline` on the same
weights, same texts, same machine.

    python tools/predict_bench.py                       # BERT-base size (12 layers, hidden 768), 512 texts
    python tools/predict_bench.py --backends tensorflow --repeats 1
    python tools/predict_bench.py --short               # first sentences (about a dozen tokens) instead
    python tools/predict_bench.py --quick               # a tiny model: checks the tool, measures nothing

A classification run is made with `kerasboost run recipes/classify.yaml` at the chosen size (2 training steps:
the weights' values do not change the speed) and exported with `kerasboost export --format transformers`,
so both systems run the same model and vocabulary. The texts are the built-in labelled set's docstrings
(48 tokens on average, a tenth cut at the run's 128 tokens) or with --short their first sentences (14 on
average), truncated to 128 tokens by both. kerasboost: `load_trained` then `predictions` (what `kerasboost
predict RUN --input FILE --batch-size N` runs) over all texts; transformers: `pipeline("text-classification",
truncation=True, max_length=128)` with its default batch size (1), and with the same batch size as ours.
Each system runs in its own process: a first pass over every text (timed apart: it compiles each batch
shape), then a second, timed, once per --repeats, interleaved across systems. Prints one JSON line per
measurement and a table of median texts/s. Model loading is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from interleave import interleaved

ROOT = Path(__file__).resolve().parent.parent
SIZE = ["num_layers=12", "num_heads=12", "hidden_dim=768", "intermediate_dim=3072"]
QUICK = ["num_layers=2", "num_heads=2", "hidden_dim=32", "intermediate_dim=64"]


def texts(count: int, short: bool = False) -> list[str]:
    """The built-in labelled docstrings, or with `short` their first sentences (a dozen tokens or so, as
    reviews and queries are)."""
    from kerasboost.data.builtin import pydocs_topics

    documents = [document.text.replace("\n", " ") for document in pydocs_topics()]
    if short:
        documents = [document.split(". ")[0] for document in documents]
    return [documents[index % len(documents)] for index in range(count)]


def build(directory: Path, quick: bool) -> None:
    """A classification run at the chosen size in `directory`/run, exported to `directory`/transformers."""
    sets = [f"model.config.{pair}" for pair in (QUICK if quick else SIZE)]
    sets += ["train.steps=2", "train.eval_every=2", "train.eval_batches=1", "export.preset=false"]
    command = [
        sys.executable,
        "-m",
        "kerasboost",
        "run",
        "recipes/classify.yaml",
        "--output-dir",
        str(directory / "run"),
    ]
    command += [arg for pair in sets for arg in ("--set", pair)]
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    export = [sys.executable, "-m", "kerasboost", "export", str(directory / "run"), "--format", "transformers"]
    subprocess.run([*export, "--out", str(directory / "transformers")], cwd=ROOT, env=env, check=True)


def measure_kerasboost(directory: Path, backend: str, count: int, batch: int, repeats: int, short: bool) -> dict:
    from kerasboost.backend import select_backend

    select_backend(backend)
    from kerasboost.predict import Sampling, predictions
    from kerasboost.runner import load_trained

    trained = load_trained(directory / "run", with_data=False)
    inputs = texts(count, short)

    def once(items: list[str]) -> float:
        started = time.perf_counter()
        for _ in predictions(trained, items, batch, 5, Sampling(max_length=1)):
            pass
        return time.perf_counter() - started

    first = once(inputs)
    return {"first_pass_s": first, "seconds": [once(inputs) for _ in range(repeats)]}


def measure_pipeline(directory: Path, count: int, batch: int, repeats: int, short: bool) -> dict:
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(directory / "transformers"), device="cpu")
    inputs = texts(count, short)
    options = {"truncation": True, "max_length": 128, "top_k": None}
    if batch > 1:
        options["batch_size"] = batch

    def once(items: list[str]) -> float:
        started = time.perf_counter()
        for _ in classify(items, **options):
            pass
        return time.perf_counter() - started

    first = once(inputs)
    return {"first_pass_s": first, "seconds": [once(inputs) for _ in range(repeats)]}


def child(args) -> None:
    directory = Path(args.directory)
    if args.system == "build":
        return build(directory, args.quick)
    if args.system.startswith("pipeline"):
        batch = args.batch if args.system == "pipeline-batched" else 1
        result = measure_pipeline(directory, args.texts, batch, 1, args.short)
    else:
        result = measure_kerasboost(directory, args.system, args.texts, args.batch, 1, args.short)
    print(json.dumps({"system": args.system, **result}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="tensorflow,jax,torch")
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--short", action="store_true", help="first sentences instead of whole docstrings")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", dest="system")
    parser.add_argument("--directory")
    args = parser.parse_args()
    if args.system:
        return child(args)
    if args.quick:
        args.texts = 64
    with tempfile.TemporaryDirectory(prefix="kerasboost-predict-bench-") as scratch:
        directory = Path(scratch)
        quick = ["--quick"] if args.quick else []
        subprocess.run(
            [sys.executable, __file__, "--child", "build", "--directory", str(directory), *quick], check=True
        )
        systems = ["pipeline", "pipeline-batched", *args.backends.split(",")]
        arguments = ["--directory", str(directory), "--texts", str(args.texts), "--batch", str(args.batch)]
        arguments += ["--short"] if args.short else []
        results = interleaved(__file__, systems, arguments, args.repeats)
    baseline = results["pipeline"]
    base_rate = args.texts / statistics.median(s for row in baseline for s in row["seconds"]) if baseline else None
    print(f"\n| system | texts/s (median of {args.repeats}) | vs pipeline | first pass s |")
    print("|---|---|---|---|")
    for system, rows in results.items():
        if rows:
            rate = args.texts / statistics.median(s for row in rows for s in row["seconds"])
            first = statistics.median(row["first_pass_s"] for row in rows)
            ratio = f"{rate / base_rate:.2f}x" if base_rate else "-"
            print(f"| {system} | {rate:,.1f} | {ratio} | {first:.1f} |")


if __name__ == "__main__":
    main()
