"""Matmul rates (TFLOP/s) at the shapes the bench workloads multiply, per backend and dtype.

    python tools/matmul_rates.py            # each backend in its own process

The 2048³ product is the peak MFU is measured against; the others are what a 4-layer, hidden-256 BERT
step at batch 16 x 128 tokens actually multiplies (projections, FFN, attention per head, MLM vocabulary
projection). Their spread bounds the MFU a training step can reach on the device.
"""

from __future__ import annotations

import os
import subprocess
import sys

SHAPES = {
    "q/k/v/out 2048x256x256": ((2048, 256), (256, 256)),
    "FFN in 2048x256x1024": ((2048, 256), (256, 1024)),
    "FFN out 2048x1024x256": ((2048, 1024), (1024, 256)),
    "scores 64x(128x64x128)": ((64, 128, 64), (64, 64, 128)),
    "values 64x(128x128x64)": ((64, 128, 128), (64, 128, 64)),
    "vocabulary 320x256x2945": ((320, 256), (256, 2945)),
    "peak 2048x2048x2048": ((2048, 2048), (2048, 2048)),
}


def rates() -> None:
    import keras

    from kerasboost.train.flops import matmul_rate

    for dtype in ("float32", "bfloat16"):
        found = [f"{matmul_rate(left, right, dtype, repeats=10) / 1e12:.2f}" for left, right in SHAPES.values()]
        print(f"| {keras.backend.backend()} | {dtype} | " + " | ".join(found) + " |", flush=True)


def main() -> None:
    if "--child" in sys.argv:
        return rates()
    print("| backend | dtype | " + " | ".join(SHAPES) + " |")
    print("|---" * (len(SHAPES) + 2) + "|")
    for backend in ("tensorflow", "jax", "torch"):
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        subprocess.run([sys.executable, __file__, "--child"], env=env, check=True, stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
