"""A training step's matmuls alone, on TensorFlow in graph mode: how fast the step could be if all its other
work were free, and so the most MFU it can reach.

    python tools/step_floor.py --vocabulary 2945     # bert_mlm as `tools/bench.py` trains it, fp32 and bf16
    python tools/step_floor.py --workload gpt2_clm
    python tools/step_floor.py --quick               # tiny sizes: checks the report, measures nothing

One `tf.function` runs exactly the products of a step of the bench workload (tools/bench.py's sizes):
per layer the query, key, value and output projections, the attention scores and values at the real
batched shapes, the two feed-forward products; then the masked-LM head's dense layer at the masked slots
(bert_mlm) and the projection onto the vocabulary (the masked slots, or every position for gpt2_clm);
forward and backward (TensorFlow differentiates them), with float32 weights cast to the compute dtype as
mixed precision does. Nothing else: no bias, norm, softmax, dropout, GELU, head split or optimizer. The
report gives that floor, its FLOP rate against the 2048³ matmul peak measured in the same process, the
step time at which the workload's matmul FLOPs make 50 % MFU, and what that leaves for everything else.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from bench import QUICK_SIZE, SIZE

WORKLOADS = ("bert_mlm", "gpt2_clm")
MASK_RATE = 0.15


def logit_rows(size: dict, workload: str) -> int:
    """Rows projected onto the vocabulary: the masked slots (bert_mlm) or every position (gpt2_clm)."""
    if workload == "bert_mlm":
        return size["batch"] * max(1, round(size["sequence"] * MASK_RATE))
    return size["batch"] * size["sequence"]


def products(size: dict, workload: str) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """The (left, right) shapes of every forward matmul of one step; batched ones lead with the batch."""
    batch, sequence, hidden, heads = size["batch"], size["sequence"], size["hidden"], size["heads"]
    tokens, head = batch * sequence, hidden // heads
    layer = [((tokens, hidden), (hidden, hidden))] * 3 + [
        ((batch * heads, sequence, head), (batch * heads, head, sequence)),
        ((batch * heads, sequence, sequence), (batch * heads, sequence, head)),
        ((tokens, hidden), (hidden, hidden)),
        ((tokens, hidden), (hidden, size["ffn"])),
        ((tokens, size["ffn"]), (size["ffn"], hidden)),
    ]
    rows = logit_rows(size, workload)
    head_dense = [((rows, hidden), (hidden, hidden))] if workload == "bert_mlm" else []
    return layer * size["layers"] + head_dense + [((rows, hidden), (hidden, size["vocabulary"]))]


def step_flops(size: dict, workload: str) -> float:
    """Forward and backward FLOPs of the step's matmuls: 3 products of 2·m·k·n each (every operand is a
    weight or an activation that needs its gradient)."""
    total = 0.0
    for left, right in products(size, workload):
        batched = left[0] if len(left) == 3 else 1
        total += 6 * batched * left[-2] * left[-1] * right[-1]
    return total


def floor_seconds(size: dict, workload: str, dtype: str, steps: int, repeats: int) -> float:
    """Median seconds per step of the matmuls alone (see the module docstring)."""
    import tensorflow as tf

    batch, sequence, hidden, heads = size["batch"], size["sequence"], size["hidden"], size["heads"]
    tokens, head = batch * sequence, hidden // heads
    compute = tf.as_dtype(dtype)
    initial = tf.random.normal((tokens, hidden))

    def weight(*shape):
        return tf.Variable(tf.random.normal(shape, stddev=0.02))

    layers = [
        {
            name: weight(*shape)
            for name, shape in (
                ("query", (hidden, hidden)),
                ("key", (hidden, hidden)),
                ("value", (hidden, hidden)),
                ("output", (hidden, hidden)),
                ("ffn_in", (hidden, size["ffn"])),
                ("ffn_out", (size["ffn"], hidden)),
            )
        }
        for _ in range(size["layers"])
    ]
    embeddings, head_dense, inputs = weight(size["vocabulary"], hidden), weight(hidden, hidden), tf.Variable(initial)
    variables = [inputs, embeddings, *(w for layer in layers for w in layer.values())] + (
        [head_dense] if workload == "bert_mlm" else []
    )
    rows = logit_rows(size, workload)

    def split(x):  # the batched shape of attention's products; a reshape, not the head transpose
        return tf.reshape(x, (batch * heads, sequence, head))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            x = tf.cast(inputs, compute)
            for layer in layers:
                w = {name: tf.cast(value, compute) for name, value in layer.items()}
                scores = tf.matmul(split(x @ w["query"]), split(x @ w["key"]), transpose_b=True)
                x = tf.reshape(tf.matmul(scores, split(x @ w["value"])), (tokens, hidden)) @ w["output"]
                x = (x @ w["ffn_in"]) @ w["ffn_out"]
            x = x[:rows]
            if workload == "bert_mlm":
                x = x @ tf.cast(head_dense, compute)
            logits = tf.matmul(x, tf.cast(embeddings, compute), transpose_b=True)
            loss = tf.reduce_sum(tf.cast(logits, tf.float32))
        gradients = tape.gradient(loss, variables)
        return tf.add_n([tf.reduce_sum(gradient[:1]) for gradient in gradients])  # fetching it waits for all

    for _ in range(3):
        step().numpy()
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(steps):
            step().numpy()
        timings.append((time.perf_counter() - started) / steps)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=WORKLOADS, default="bert_mlm")
    parser.add_argument("--vocabulary", type=int, help="the vocabulary size (default: the bench workload's 8192)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 2 steps, 1 repeat")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ["KERAS_BACKEND"] = "tensorflow"
    from kerasboost.train.flops import matmul_peak

    size, steps, repeats = (QUICK_SIZE, 2, 1) if args.quick else (SIZE, 20, 5)
    size = dict(size, vocabulary=args.vocabulary or size["vocabulary"])
    flops = step_flops(size, args.workload)
    print(
        "| workload | dtype | matmul GFLOP per step | matmuls alone ms | TFLOP/s | peak TFLOP/s | "
        "step ms at 50 % MFU | left for the rest ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for dtype in ("float32", "bfloat16"):
        seconds = floor_seconds(size, args.workload, dtype, steps, repeats)
        peak = matmul_peak(dtype, size=256 if args.quick else 2048)
        at_half = flops / (0.5 * peak)
        print(
            f"| {args.workload} | {dtype} | {flops / 1e9:.2f} | {seconds * 1e3:.1f} | "
            f"{flops / seconds / 1e12:.3f} | {peak / 1e12:.3f} | {at_half * 1e3:.1f} | "
            f"{(at_half - seconds) * 1e3:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
