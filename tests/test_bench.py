"""`kerasboost bench --quick` and `tools/bench.py --quick`: every row present with positive numbers.

Only the shape of the report is checked: no test asserts a speed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import ROOT, backend_env, explain, kerasboost

NUMBERS = (
    "time_to_first_step_s",
    "step_time_s",
    "tokens_per_second",
    "flops_per_token",
    "model_tflops",
    "peak_tflops",
    "mfu",
    "peak_memory_mib",
    "synthetic_tokens_per_second",
    "input_ratio",
)


def test_kerasboost_bench_reports_every_backend(tmp_path):
    process = kerasboost(
        "bench",
        "recipes/lora_mlm.yaml",
        "--quick",
        "--backends",
        "jax,torch",
        "--set",
        "train.precision=float32",
        "--json",
        "--profile",
        str(tmp_path),
    )
    assert process.returncode == 0, explain(process)
    rows = json.loads(process.stdout.strip().splitlines()[-1])
    assert [row["backend"] for row in rows] == ["jax", "torch"]
    for row in rows:
        assert all(row[key] > 0 for key in NUMBERS), row
        assert row["steps"] == 3 and row["trainable_parameters"] < row["parameters"]
        assert_profiled(row, tmp_path / row["backend"])
    assert rows[0]["peak_tflops"] == rows[1]["peak_tflops"]  # one device peak per precision
    # bfloat16 on TensorFlow: the matmul peak (also measured by every training run) must handle it; two
    # micro-batches per execution: the last of the 3 steps runs alone.
    table = kerasboost(
        "bench",
        "recipes/mlm.yaml",
        "--quick",
        "--backend",
        "tensorflow",
        "--set",
        "train.precision=mixed_bfloat16",
        "--set",
        "train.steps_per_execution=2",
        "--profile",
        str(tmp_path),
    )
    assert table.returncode == 0, explain(table)
    lines = table.stdout.splitlines()
    assert lines[-3].startswith("| backend | precision | tokens/s |")
    assert lines[-1].startswith("| tensorflow | mixed_bfloat16 |")
    assert f"tensorflow mixed_bfloat16: trace in {tmp_path / 'tensorflow'}" in lines
    assert "| _MklMatMul |" in table.stdout or "| MatMul |" in table.stdout  # TensorFlow's kernels, by type


def assert_profiled(row: dict, directory):
    """A trace the backend's viewer reads, and its operations ranked by time (XLA's or ATen's)."""
    assert row["profile_dir"] == str(directory)
    assert list(directory.rglob("*.xplane.pb" if row["backend"] != "torch" else "*.pt.trace.json"))
    ops = row["top_ops"]
    assert 5 <= len(ops) <= 15 and all(op["ms_per_step"] > 0 and 0 < op["share"] <= 1 for op in ops)
    assert [op["ms_per_step"] for op in ops] == sorted((op["ms_per_step"] for op in ops), reverse=True)
    expected = "aten::" if row["backend"] == "torch" else ""
    assert all(op["op"].startswith(expected) and "::" not in op["op"].removeprefix("aten::") for op in ops)
    assert any(name in op["op"] for op in ops for name in ("mm", "dot", "ynn_fusion")), ops  # the matmuls are there


def test_bench_tool_compares_every_system(tmp_path):
    process = subprocess.run(
        [sys.executable, "tools/bench.py", "--quick", "--workloads", "gpt2_clm_lora", "--out", str(tmp_path)],
        cwd=ROOT,
        env=backend_env(None),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert process.returncode == 0, explain(process)
    report = json.loads(next(tmp_path.glob("*.json")).read_text())
    workload = report["workloads"]["gpt2_clm_lora"]
    systems = [f"kerasboost {b} fp32" for b in ("jax", "tensorflow", "torch")]
    systems += [f"keras-hub fit {b} fp32" for b in ("jax", "tensorflow", "torch")] + [
        "transformers eager fp32",
        "transformers eager bf16",
    ]
    assert sorted(workload["tokens_per_second"]) == sorted(systems)
    assert all(value > 0 for value in workload["tokens_per_second"].values())
    assert len(workload["ratios"]) == 4 and all(value > 0 for value in workload["ratios"].values())
    assert workload["mfu_of_best_kerasboost"] > 0 and workload["input_ratio_of_best_kerasboost"] > 0
    table = next(tmp_path.glob("*.md")).read_text()
    assert all(f"| {name} |" in table for name in systems), table


@pytest.mark.parametrize("args, expected", [(["--backends", "jax,theano"], "--backends: unknown backend 'theano'")])
def test_bench_bad_backend_is_an_input_error(args, expected):
    process = kerasboost("bench", "recipes/mlm.yaml", "--quick", *args)
    assert process.returncode == 2 and expected in process.stderr, process.stderr


@pytest.mark.parametrize("workload", ["bert_mlm", "gpt2_clm"])
def test_step_floor_tool_reports_both_dtypes(workload):
    process = subprocess.run(
        [sys.executable, "tools/step_floor.py", "--quick", "--workload", workload],
        cwd=ROOT,
        env=backend_env(None),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 0, explain(process)
    rows = [line.split("|")[1:-1] for line in process.stdout.splitlines() if line.startswith(f"| {workload} |")]
    assert [row[1].strip() for row in rows] == ["float32", "bfloat16"]
    assert rows[0][2] == rows[1][2] and all(float(cell) > 0 for row in rows for cell in row[2:6]), process.stdout
