"""Side by side on the same workloads: kerasboost and plain keras-hub `fit` (the same model) on each backend,
each in fp32 and mixed_bfloat16, and Hugging Face transformers (+ PEFT for LoRA) in eager PyTorch, fp32 and
bf16 autocast.

    python tools/bench.py                                 # every workload, 3 repeats (about an hour on 2 cores)
    python tools/bench.py --workloads bert_mlm --repeats 1
    python tools/bench.py --quick                         # tiny model, 3 steps: checks the report, measures nothing

Each measurement runs in a fresh process (Keras fixes its backend at import). Repeats interleave: every
system runs once before any runs again, so slow drifts of the machine spread over all of them. The
report (markdown + JSON, under runs/bench/) holds the median tokens/s of each system and the ratios
docs/performance.md quotes. kerasboost reads real text through its pipeline; the baselines train on pre-tokenised
random tokens, so the kerasboost / keras-hub ratio also covers the input pipeline. The baselines use the
vocabulary size kerasboost's tokenizer reached (WordPiece stops below 8192 on the built-in corpus), so
every system trains the same model.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("jax", "tensorflow", "torch")

# The workloads: 4 layers, hidden 256, 4 heads, FFN 1024, vocabulary 8192, sequence 128, batch 16.
SIZE = {"layers": 4, "heads": 4, "hidden": 256, "ffn": 1024, "vocabulary": 8192, "sequence": 128, "batch": 16}
QUICK_SIZE = {"layers": 2, "heads": 2, "hidden": 32, "ffn": 64, "vocabulary": 1000, "sequence": 32, "batch": 8}
WORKLOADS = {
    "bert_mlm": ("recipes/mlm.yaml", False),
    "gpt2_clm": ("recipes/gpt2_clm.yaml", False),
    "bert_mlm_lora": ("recipes/mlm.yaml", True),
    "gpt2_clm_lora": ("recipes/gpt2_clm.yaml", True),
}
LORA_RANK = 8


def kerasboost_overrides(size: dict, lora: bool, precision: str) -> list[str]:
    pairs = [
        f"model.config.num_layers={size['layers']}",
        f"model.config.num_heads={size['heads']}",
        f"model.config.hidden_dim={size['hidden']}",
        f"model.config.intermediate_dim={size['ffn']}",
        f"model.config.max_sequence_length={size['sequence']}",
        f"data.sequence_length={size['sequence']}",
        f"data.vocabulary_size={size['vocabulary']}",
        f"train.batch_size={size['batch']}",
        f"train.precision={precision}",
    ]
    if lora:
        pairs += ["peft.method=lora", f"peft.rank={LORA_RANK}", "peft.targets=[query, value]", "peft.dropout=0"]
    return pairs


# ---------------------------------------------------------------------------------------------
# Children: one measurement each, printed as one JSON line.


def child_kerasboost(workload: str, size: dict, steps: int, warmup: int, precision: str, backend: str) -> dict:
    recipe, lora = WORKLOADS[workload]
    args = [arg for pair in kerasboost_overrides(size, lora, precision) for arg in ("--set", pair)]
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "kerasboost",
            "bench",
            recipe,
            *args,
            "--steps",
            str(steps),
            "--warmup",
            str(warmup),
            "--backend",
            backend,
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if process.returncode != 0:
        raise RuntimeError(f"kerasboost bench {workload} {backend}: {process.stderr.strip().splitlines()[-1:]}")
    return json.loads(process.stdout.strip().splitlines()[-1])[0]


def synthetic_batches(workload: str, size: dict, rows: int):
    """Random token ids with BERT's 15 % masked slots, or next-token labels for GPT-2 (numpy)."""
    import numpy as np

    rng = np.random.default_rng(0)
    vocabulary, sequence = size["vocabulary"], size["sequence"]
    token_ids = rng.integers(5, vocabulary, (rows, sequence)).astype("int32")
    if workload.startswith("bert"):
        slots = round(0.15 * sequence)
        positions = np.sort(np.argsort(rng.random((rows, sequence)), axis=1)[:, :slots], axis=1).astype("int32")
        labels = np.take_along_axis(token_ids, positions, axis=1)
        return {"token_ids": token_ids, "positions": positions, "labels": labels}
    return {"token_ids": token_ids, "labels": np.roll(token_ids, -1, axis=1)}


def child_keras_hub(workload: str, size: dict, steps: int, warmup: int, precision: str) -> dict:
    """Plain keras-hub: the task model, `compile` and `fit` on in-memory arrays; nothing of kerasboost's."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import keras_hub
    import numpy as np

    from kerasboost.bench import StepTimer

    keras.config.set_dtype_policy(precision)

    config = dict(
        vocabulary_size=size["vocabulary"],
        num_layers=size["layers"],
        num_heads=size["heads"],
        hidden_dim=size["hidden"],
        intermediate_dim=size["ffn"],
        max_sequence_length=size["sequence"],
    )
    rows = size["batch"] * steps
    data = synthetic_batches(workload, size, rows)
    ones = np.ones_like(data["labels"], dtype="float32")
    if workload.startswith("bert"):
        backbone = keras_hub.models.BertBackbone(**config)
        model = keras_hub.models.BertMaskedLM(backbone=backbone, preprocessor=None)
        x = {
            "token_ids": data["token_ids"],
            "segment_ids": np.zeros_like(data["token_ids"]),
            "padding_mask": np.ones_like(data["token_ids"]),
            "mask_positions": data["positions"],
        }
    else:
        backbone = keras_hub.models.GPT2Backbone(**config)
        model = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
        x = {"token_ids": data["token_ids"], "padding_mask": np.ones_like(data["token_ids"])}
    if workload.endswith("lora"):
        backbone.enable_lora(LORA_RANK)
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-4, weight_decay=0.01, global_clipnorm=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy()],
    )
    timer = StepTimer()
    started = time.perf_counter()
    model.fit(
        x,
        data["labels"],
        sample_weight=ones,
        batch_size=size["batch"],
        epochs=1,
        shuffle=False,
        callbacks=[timer],
        verbose=0,
    )
    return _row(*timer.step_times(started), warmup, size, backend=keras.backend.backend(), precision=precision)


def child_transformers(workload: str, size: dict, steps: int, warmup: int, precision: str) -> dict:
    """Hugging Face transformers in eager PyTorch (+ PEFT LoRA), AdamW, clipping 1.0; bf16 by autocast."""
    import contextlib

    import numpy as np
    import peft
    import torch
    import transformers

    torch.manual_seed(0)
    if workload.startswith("bert"):
        config = transformers.BertConfig(
            vocab_size=size["vocabulary"],
            hidden_size=size["hidden"],
            num_hidden_layers=size["layers"],
            num_attention_heads=size["heads"],
            intermediate_size=size["ffn"],
            max_position_embeddings=size["sequence"],
        )
        model, targets = transformers.BertForMaskedLM(config), ["query", "value"]
    else:
        config = transformers.GPT2Config(
            vocab_size=size["vocabulary"],
            n_positions=size["sequence"],
            n_embd=size["hidden"],
            n_layer=size["layers"],
            n_head=size["heads"],
            n_inner=size["ffn"],
        )
        model, targets = transformers.GPT2LMHeadModel(config), ["c_attn"]  # HF fuses q/k/v: LoRA covers all three
    if workload.endswith("lora"):
        model = peft.get_peft_model(
            model, peft.LoraConfig(r=LORA_RANK, lora_alpha=16, lora_dropout=0.0, target_modules=targets)
        )
    model.train()
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=0.01)
    data = synthetic_batches(workload, size, size["batch"] * steps)
    ids = torch.from_numpy(data["token_ids"]).long()
    if workload.startswith("bert"):
        labels = torch.full_like(ids, -100)
        positions = torch.from_numpy(data["positions"]).long()
        labels.scatter_(1, positions, ids.gather(1, positions))
    else:
        labels = ids
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    ends, started = [], time.perf_counter()
    for step in range(steps):
        rows = slice(step * size["batch"], (step + 1) * size["batch"])
        with autocast:
            loss = model(input_ids=ids[rows], labels=labels[rows]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ends.append(time.perf_counter())
    return _row(np.diff([started, *ends]), np.ones(len(ends)), warmup, size, backend="torch eager", precision=precision)


def _row(seconds, steps, warmup: int, size: dict, **fields) -> dict:
    """One system's measurement: its first step (with any compilation) and its median step after `warmup`."""
    from kerasboost.bench import steady_step_time  # imported after the measurement: it brings in keras

    steady = steady_step_time(seconds, steps, warmup)
    return {
        **fields,
        "time_to_first_step_s": float(seconds[0]),
        "step_time_s": steady,
        "tokens_per_second": size["batch"] * size["sequence"] / steady,
    }


# ---------------------------------------------------------------------------------------------
# The orchestrator.


def systems(precisions: list[str]) -> list[tuple[str, dict]]:
    """(name, how to run it) for every system compared."""
    found = []
    for precision in precisions:
        short = "fp32" if precision == "float32" else "bf16"
        for kind, label in (("kerasboost", "kerasboost"), ("keras_hub", "keras-hub fit")):
            found += [
                (f"{label} {backend} {short}", {"kind": kind, "backend": backend, "precision": precision})
                for backend in BACKENDS
            ]
    found += [
        (f"transformers eager {precision}", {"kind": "transformers", "precision": precision})
        for precision in ("fp32", "bf16")
    ]
    return found


def measure(spec: dict, workload: str, size: dict, steps: int, warmup: int) -> dict:
    """Runs one system on one workload in a fresh process and returns its row."""
    if spec["kind"] == "kerasboost":
        return child_kerasboost(workload, size, steps, warmup, spec["precision"], spec["backend"])
    env = dict(os.environ, KERAS_BACKEND=spec.get("backend", "torch"), TF_CPP_MIN_LOG_LEVEL="3")
    request = json.dumps({"spec": spec, "workload": workload, "size": size, "steps": steps, "warmup": warmup})
    process = subprocess.run(
        [sys.executable, __file__, "--child", request], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if process.returncode != 0:
        raise RuntimeError(f"{spec} on {workload}: {process.stderr.strip()[-2000:]}")
    return json.loads(process.stdout.strip().splitlines()[-1])


def run_child(request: dict) -> None:
    spec, workload, size, steps, warmup = (request[key] for key in ("spec", "workload", "size", "steps", "warmup"))
    if spec["kind"] == "keras_hub":
        row = child_keras_hub(workload, size, steps, warmup, spec["precision"])
    else:
        row = child_transformers(workload, size, steps, warmup, spec["precision"])
    print(json.dumps(row))


def report(results: dict, names: list[str]) -> tuple[dict, str]:
    """Medians per system and workload, the ratios, and the markdown table. MFU is against the best matmul
    any backend reached in that precision (the device's peak), not each backend's own."""
    from kerasboost.bench import normalise_mfu

    summary = {}
    for workload, by_system in results.items():
        normalise_mfu([row for name, rows in by_system.items() if name.startswith("kerasboost") for row in rows])
        medians = {
            name: statistics.median(row["tokens_per_second"] for row in rows) for name, rows in by_system.items()
        }
        kerasboost = {name: value for name, value in medians.items() if name.startswith("kerasboost")}
        best = max(kerasboost, key=kerasboost.get)
        best_hf = max((name for name in medians if name.startswith("transformers")), key=medians.get)
        ratios = {
            f"kerasboost / keras-hub fit ({backend} {short})": medians[f"kerasboost {backend} {short}"]
            / medians[f"keras-hub fit {backend} {short}"]
            for short in sorted({name.rsplit(" ", 1)[1] for name in kerasboost}, reverse=True)
            for backend in BACKENDS
        }
        ratios[f"best kerasboost ({best}) / best transformers ({best_hf})"] = medians[best] / medians[best_hf]
        mfu = statistics.median(row["mfu"] for row in by_system[best])
        fed = statistics.median(row["input_ratio"] for row in by_system[best])
        summary[workload] = {
            "tokens_per_second": medians,
            "ratios": ratios,
            "mfu_of_best_kerasboost": mfu,
            "input_ratio_of_best_kerasboost": fed,
            "runs": {name: rows for name, rows in by_system.items()},
        }
    header = "| system | " + " | ".join(results) + " |"
    lines = [header, "|---" * (len(results) + 1) + "|"]
    for name in names:
        lines.append(
            f"| {name} | " + " | ".join(f"{summary[w]['tokens_per_second'][name]:,.0f}" for w in results) + " |"
        )
    lines += ["", "| ratio | " + " | ".join(results) + " |", "|---" * (len(results) + 1) + "|"]
    ratio_names = [key for key in next(iter(summary.values()))["ratios"] if not key.startswith("best")]
    for key in ratio_names:
        lines.append(f"| {key} | " + " | ".join(f"{summary[w]['ratios'][key]:.2f}" for w in results) + " |")
    lines.append(
        "| best kerasboost / best transformers | "
        + " | ".join(f"{next(v for k, v in summary[w]['ratios'].items() if k.startswith('best')):.2f}" for w in results)
        + " |"
    )
    lines.append(
        "| MFU of the best kerasboost | "
        + " | ".join(f"{summary[w]['mfu_of_best_kerasboost']:.1%}" for w in results)
        + " |"
    )
    lines.append(
        "| best kerasboost, real text / one in-memory batch | "
        + " | ".join(f"{summary[w]['input_ratio_of_best_kerasboost']:.2f}" for w in results)
        + " |"
    )
    return summary, "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--precisions", default="float32,mixed_bfloat16", help="kerasboost's precisions")
    parser.add_argument("--quick", action="store_true", help="tiny model, 3 steps, 1 repeat, float32")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return run_child(json.loads(args.child))
    size, steps, warmup, repeats, precisions = SIZE, args.steps, args.warmup, args.repeats, args.precisions.split(",")
    if args.quick:
        size, steps, warmup, repeats, precisions = QUICK_SIZE, 3, 1, 1, ["float32"]
    workloads = args.workloads.split(",")
    unknown = [name for name in workloads if name not in WORKLOADS]
    if unknown:
        parser.error(f"--workloads: unknown workload {unknown[0]!r} (choose from {', '.join(WORKLOADS)})")
    chosen = systems(precisions)  # kerasboost first: the baselines then use its vocabulary size
    results: dict = {workload: {name: [] for name, _ in chosen} for workload in workloads}
    vocabulary = {}
    for repeat in range(repeats):
        for workload in workloads:
            for name, spec in chosen:
                same_size = dict(size, vocabulary=vocabulary.get(workload, size["vocabulary"]))
                row = measure(spec, workload, same_size, steps, warmup)
                vocabulary.setdefault(workload, row.get("vocabulary_size", size["vocabulary"]))
                results[workload][name].append(row)
                print(
                    f"repeat {repeat + 1}/{repeats} {workload:<14} {name:<28} "
                    f"{row['tokens_per_second']:>10,.0f} tokens/s",
                    flush=True,
                )
    summary, table = report(results, [name for name, _ in chosen])
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    machine = {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "size": size,
        "steps": steps,
        "warmup": warmup,
        "repeats": repeats,
    }
    stem.with_suffix(".json").write_text(json.dumps({"machine": machine, "workloads": summary}, indent=1))
    stem.with_suffix(".md").write_text(table + "\n")
    print(table)
    print(f"report: {stem}.md, {stem}.json")


if __name__ == "__main__":
    main()
