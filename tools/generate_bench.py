"""Generation speed: kerasboost's causal-LM generation (generation.py, the path `kerasboost predict` /
`generate` take, in the precision `train.precision: auto` picks on each backend) against transformers'
`generate` (KV cache, eager PyTorch) in float32 and in bfloat16, on the same weights.

    python tools/generate_bench.py                      # GPT-2 small (12 layers, hidden 768), batch 8, 64 new tokens
    python tools/generate_bench.py --backends tensorflow --repeats 1
    python tools/generate_bench.py --quick              # a tiny model: checks the tool, measures nothing

A random GPT-2 is built by kerasboost and exported with `--format transformers`'s writer, so both systems
run the same weights and tokenizer. Each system runs in its own process (Keras fixes its backend at
import); a first call compiles (timed apart), then `--repeats` timed calls, interleaved across systems.
Prints one JSON line per measurement and a table of median new tokens/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from interleave import interleaved

ROOT = Path(__file__).resolve().parent.parent
SIZE = {"layers": 12, "heads": 12, "hidden": 768, "ffn": 3072, "positions": 1024}
QUICK = {"layers": 2, "heads": 2, "hidden": 32, "ffn": 64, "positions": 128}
PROMPT = "def read_file(path):\n    with open(path) as handle:"


def build(directory: Path, size: dict) -> None:
    """A random GPT-2 of `size` with a BPE tokenizer trained on the built-in corpus, as a transformers dir."""
    from kerasboost.backend import select_backend

    select_backend("torch")
    import keras
    import keras_hub

    from kerasboost.architectures import architecture
    from kerasboost.data.builtin import pydocs
    from kerasboost.data.tokenizer import train_byte_level_bpe
    from kerasboost.models.backbone import build_backbone
    from kerasboost.models.causal_lm import build_causal_lm_model
    from kerasboost.models.hugging_face import save_pretrained
    from kerasboost.recipe import ModelConfig

    spec = architecture("gpt2")
    texts = [d.text for d in pydocs()[:3000]]
    vocabulary, merges = train_byte_level_bpe(lambda: iter(texts), 8192, spec.special_tokens, texts)
    tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary=vocabulary, merges=merges)
    keras.utils.set_random_seed(0)
    config = dict(
        num_layers=size["layers"],
        num_heads=size["heads"],
        hidden_dim=size["hidden"],
        intermediate_dim=size["ffn"],
        dropout=0.0,
        max_sequence_length=size["positions"],
    )
    backbone = build_backbone(ModelConfig(backbone="gpt2", config=config), tokenizer.vocabulary_size())
    save_pretrained(build_causal_lm_model(backbone), backbone, tokenizer, "causal_lm", None, directory)


def measure_kerasboost(directory: Path, backend: str, batch: int, new_tokens: int, repeats: int) -> dict:
    """What `kerasboost predict` runs on a causal-LM run: the decoder in the precision `auto` picks."""
    from kerasboost.backend import select_backend, use_precision

    select_backend(backend)
    from kerasboost.data.tokenizer import build_tokenizer
    from kerasboost.generation import generate, token_generator
    from kerasboost.models.backbone import build_backbone
    from kerasboost.recipe import DataConfig, ModelConfig
    from kerasboost.rundir import RunDir

    precision = use_precision("auto")
    model = ModelConfig(backbone="gpt2", preset=str(directory))
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = build_tokenizer(model, DataConfig(), RunDir(Path(scratch)))
    backbone = build_backbone(model, tokenizer.vocabulary_size())
    generator = token_generator(backbone, "greedy", 1, 1.0)
    prompts = [PROMPT] * batch
    length = len(tokenizer(PROMPT)) + new_tokens

    def once() -> float:
        started = time.perf_counter()
        generate(generator, tokenizer, prompts, length, 0)
        return time.perf_counter() - started

    first = once()
    return {"precision": precision.policy, "first_call_s": first, "seconds": [once() for _ in range(repeats)]}


def measure_transformers(directory: Path, batch: int, new_tokens: int, repeats: int, dtype: str) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=getattr(torch, dtype)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    ids = tokenizer([PROMPT] * batch, return_tensors="pt")

    def once() -> float:
        started = time.perf_counter()
        with torch.no_grad():
            model.generate(
                **ids,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                use_cache=True,
                pad_token_id=tokenizer.pad_token_id,
            )
        return time.perf_counter() - started

    first = once()
    return {"precision": dtype, "first_call_s": first, "seconds": [once() for _ in range(repeats)]}


def child(args) -> None:
    """One measurement (or the model's build) in this process."""
    directory = Path(args.directory)
    if args.system == "build":
        return build(directory, QUICK if args.quick else SIZE)
    if args.system.startswith("transformers"):
        dtype = "bfloat16" if args.system.endswith("bf16") else "float32"
        result = measure_transformers(directory, args.batch, args.new_tokens, 1, dtype)
    else:
        result = measure_kerasboost(directory, args.system, args.batch, args.new_tokens, 1)
    print(json.dumps({"system": args.system, **result}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="tensorflow,jax,torch")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", dest="system")
    parser.add_argument("--directory")
    args = parser.parse_args()
    if args.system:
        return child(args)
    with tempfile.TemporaryDirectory(prefix="kerasboost-generate-bench-") as scratch:
        directory = Path(scratch) / "gpt2"
        quick = ["--quick"] if args.quick else []
        subprocess.run(
            [sys.executable, __file__, "--child", "build", "--directory", str(directory), *quick], check=True
        )
        systems = ["transformers", "transformers-bf16", *args.backends.split(",")]
        arguments = ["--directory", str(directory), *["--batch", str(args.batch), "--new-tokens", str(args.new_tokens)]]
        results = interleaved(__file__, systems, arguments, args.repeats)
    print("\n| system | precision | new tokens/s (median) | first call s |")
    print("|---|---|---|---|")
    for system, rows in results.items():
        if rows:
            seconds = statistics.median(s for row in rows for s in row["seconds"])
            first = statistics.median(row["first_call_s"] for row in rows)
            rate = args.batch * args.new_tokens / seconds
            print(f"| {system} | {rows[0]['precision']} | {rate:,.1f} | {first:.1f} |")


if __name__ == "__main__":
    main()
