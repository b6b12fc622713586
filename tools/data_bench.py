"""Data preparation: `kerasboost prepare` against the Hugging Face pipeline a user would write, on corpora of
growing size made here from the Python sources of the installed packages (nothing is downloaded).

    python tools/data_bench.py --sizes 30,300 --workdir /tmp/kerasboost-data-bench   # the issue's sizes
    python tools/data_bench.py                                  # 10, 30 and 100 MB, 1 repeat, a temp workdir
    python tools/data_bench.py --sizes 1,2 --no-train           # checks the tool, measures nothing

Corpora: the site-packages `*.py` files in sorted path order, a blank line between files, the list repeated
if a size needs more, cut at the size; written once as <workdir>/corpus-{N}mb.txt (kept when --workdir is
given). Both systems split documents at blank lines (kerasboost's `data.document_split: blank_line`, the
`text` builder's `sample_by="paragraph"`) and train an 8000-piece lowercase WordPiece vocabulary.

kerasboost: `kerasboost prepare recipes/mlm.yaml --set data.source=CORPUS --set data.format=text
--set data.store=DIR --json` with a fresh KERASBOOST_CACHE_DIR (nothing reused).
Baseline (transformers' examples/pytorch/language-modeling/run_mlm.py, default mode): `load_dataset("text")`,
`BertWordPieceTokenizer.train_from_iterator` on batches of 1000 documents, wrapped in
`PreTrainedTokenizerFast` with BERT's post-processor, `map(tokenize, batched=True, num_proc=2)` (--num-proc) with
`return_special_tokens_mask=True`, then run_mlm's `group_texts`: every document's ids with its own
[CLS]/[SEP] concatenated and cut into 128-token rows, the tail dropped. It makes no validation split
(run_mlm slices 5 % of the same cached data). Each runs as a subprocess, in a fresh cache, interleaved per
size, while the summed RSS of its process tree is polled every 0.05 s (shared pages of forked workers
count once per process). MB/s is the corpus size over the command's wall time, imports included ("own s":
the time each reports for its own work). An untimed import of the libraries first warms the disk cache.

Then, unless --no-train, `kerasboost run` of a tiny BERT for 1 step on each size's store: wall time, time to
the first `step 1/` line, peak RSS, and whether the run reused the store.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import itertools
import json
import math
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

try:
    import psutil
except ImportError:  # read /proc instead
    psutil = None

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "mlm.yaml"
SPECIALS_NAMES = ("pad", "unk", "cls", "sep", "mask")
SPECIALS = [f"[{name.upper()}]" for name in SPECIALS_NAMES]
TRAIN = dict(steps=1, batch_size=8, warmup_steps=0, eval_every=1, eval_batches=1)  # 1 step, then 1 eval batch
MODEL = dict(num_layers=1, num_heads=2, hidden_dim=32, intermediate_dim=64)
TINY_RUN = [f"train.{k}={v}" for k, v in TRAIN.items()] + [f"model.config.{k}={v}" for k, v in MODEL.items()]
TINY_RUN += ["logging.every_steps=1", "logging.tensorboard=false", "export.preset=false"]  # nothing slow at the end


def python_files() -> list[str]:
    roots = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    return sorted({str(path) for root in roots for path in Path(root).rglob("*.py") if path.is_file()})


def build_corpus(path: Path, megabytes: float, files: list[str]) -> None:
    """`megabytes` MB (1e6 bytes, cut at a line end) of the files' text, a blank line between files."""
    if path.exists():
        return
    target, written = int(megabytes * 1e6), 0
    partial = path.with_suffix(".partial")
    with open(partial, "wb") as out:
        for name in itertools.cycle(files):
            try:
                text = Path(name).read_text(encoding="utf-8", errors="replace").strip("\n")
            except OSError:
                continue
            if not text.strip():
                continue
            piece = (text + "\n\n").encode()
            if written + len(piece) >= target:
                piece = piece[: target - written].decode("utf-8", "ignore").rsplit("\n", 1)[0].encode() + b"\n"
                out.write(piece)
                break
            out.write(piece)
            written += len(piece)
    partial.rename(path)


def tree_rss(pid: int) -> int:
    """Bytes resident in `pid` and all its descendants."""
    if psutil is not None:
        try:
            parent = psutil.Process(pid)
            processes = [parent, *parent.children(recursive=True)]
        except psutil.Error:
            return 0
        total = 0
        for process in processes:
            with contextlib.suppress(psutil.Error):
                total += process.memory_info().rss
        return total
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    tree, frontier = {pid}, [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent == frontier.pop() and child not in tree]
        tree.update(children)
        frontier += children
    total = 0
    for member in tree:
        try:
            status = Path(f"/proc/{member}/status").read_text()
            total += int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) * 1024
        except (OSError, AttributeError):
            pass
    return total


def measure(command: list[str], env: dict, cwd: Path, log: Path) -> tuple[dict, list[tuple[float, str]]]:
    """Runs `command` to its end; wall seconds, peak RSS of its tree, its stdout lines with their times."""
    lines: list[tuple[float, str]] = []
    started = time.perf_counter()
    with open(log, "w") as stderr:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)

        def read() -> None:
            for line in process.stdout:
                lines.append((time.perf_counter() - started, line.rstrip("\n")))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        peak = 0
        while process.poll() is None:
            peak = max(peak, tree_rss(process.pid))
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        reader.join()
    row = {"wall_s": round(seconds, 3), "peak_rss_mb": round(peak / 1e6, 1), "returncode": process.returncode}
    if process.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        row["error"] = " / ".join(tail).replace("|", "/") or f"exit status {process.returncode}"
    return row, lines


def last_json(lines: list[tuple[float, str]]) -> dict:
    for _, line in reversed(lines):
        if line.startswith("{"):
            return json.loads(line)
    return {}


def baseline(corpus: str, cache_dir: str, num_proc: int, sequence_length: int = 128) -> None:
    """The Hugging Face pipeline in this process; prints one JSON line."""
    from itertools import chain

    import datasets
    import pyarrow.compute as pc
    import transformers
    from tokenizers import BertWordPieceTokenizer, processors

    started = time.perf_counter()
    phases = {}
    raw = datasets.load_dataset("text", data_files={"train": corpus}, cache_dir=cache_dir, sample_by="paragraph")
    raw = raw["train"]
    phases["load_s"] = time.perf_counter() - started

    def batches():
        for start in range(0, len(raw), 1000):
            yield raw[start : start + 1000]["text"]

    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(batches(), vocab_size=8000, special_tokens=SPECIALS, length=len(raw))
    cls, sep = (wordpiece.token_to_id(token) for token in ("[CLS]", "[SEP]"))
    wordpiece.post_processor = processors.BertProcessing(("[SEP]", sep), ("[CLS]", cls))
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=wordpiece._tokenizer, **{f"{name}_token": f"[{name.upper()}]" for name in SPECIALS_NAMES}
    )
    phases["vocabulary_s"] = time.perf_counter() - started - sum(phases.values())

    def tokenize(examples):
        return tokenizer(examples["text"], return_special_tokens_mask=True)

    tokenized = raw.map(tokenize, batched=True, num_proc=num_proc, remove_columns=["text"])
    phases["tokenize_s"] = time.perf_counter() - started - sum(phases.values())

    def group_texts(examples):  # run_mlm.py's, as written there
        concatenated_examples = {k: list(chain(*examples[k])) for k in examples}
        total_length = len(concatenated_examples[list(examples.keys())[0]])
        total_length = (total_length // sequence_length) * sequence_length
        return {
            k: [t[i : i + sequence_length] for i in range(0, total_length, sequence_length)]
            for k, t in concatenated_examples.items()
        }

    grouped = tokenized.map(group_texts, batched=True, num_proc=num_proc)
    phases["group_s"] = time.perf_counter() - started - sum(phases.values())
    seconds = time.perf_counter() - started
    tokens = pc.sum(pc.list_value_length(tokenized.data.column("input_ids"))).as_py()
    summary = {"documents": len(raw), "tokens": tokens, "train_rows": len(grouped), "seconds": round(seconds, 3)}
    print(json.dumps({**summary, **{k: round(v, 3) for k, v in phases.items()}}))


def sets(pairs: list[str]) -> list[str]:
    return [arg for pair in pairs for arg in ("--set", pair)]


def slope(sizes: list[float], seconds: list[float]) -> float | None:
    """Least-squares slope of log(seconds) over log(MB)."""
    if len(sizes) < 2:
        return None
    xs, ys = [math.log(x) for x in sizes], [math.log(y) for y in seconds]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def describe() -> dict:
    def output(*command: str) -> str:
        try:
            return subprocess.run(command, cwd=ROOT, capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""

    commit = output("git", "rev-parse", "--short", "HEAD") + (
        "+dirty" if output("git", "status", "--porcelain") else ""
    )
    versions = {}
    for package in ("kerasboost", "keras", "datasets", "tokenizers", "transformers"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    return {
        "command": shlex.join(["python", "tools/data_bench.py", *sys.argv[1:]]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "commit": commit,
        "nproc": output("nproc") or str(os.cpu_count()),
        "python": sys.version.split()[0],
        "versions": versions,
    }


def summarise(runs: dict, megabytes: dict) -> dict:
    """Medians per system and size, MB/s, ratios, growth exponents."""
    out: dict = {"systems": {}, "ratio_mb_per_s": {}}
    for system, by_size in runs.items():
        rows = {}
        for size, tries in by_size.items():
            good = [row for row in tries if row["returncode"] == 0]
            if good:
                seconds = statistics.median(row["wall_s"] for row in good)
                rss = statistics.median(row["peak_rss_mb"] for row in good)
                rows[size] = {"wall_s": seconds, "mb_per_s": megabytes[size] / seconds, "peak_rss_mb": rss}
        growth = {}
        if len(rows) >= 2:
            small, large = min(rows, key=float), max(rows, key=float)
            growth = {
                "exponent": slope([megabytes[s] for s in rows], [rows[s]["wall_s"] for s in rows]),
                "time_largest_over_smallest": rows[large]["wall_s"] / rows[small]["wall_s"],
                "rss_growth_mb": rows[large]["peak_rss_mb"] - rows[small]["peak_rss_mb"],
                "rss_largest_over_smallest": rows[large]["peak_rss_mb"] / rows[small]["peak_rss_mb"],
            }
        out["systems"][system] = {"sizes": rows, "growth": growth}
    kerasboost, hf = (out["systems"][name]["sizes"] for name in ("kerasboost", "baseline"))
    for size in sorted(set(kerasboost) & set(hf), key=float):
        out["ratio_mb_per_s"][size] = kerasboost[size]["mb_per_s"] / hf[size]["mb_per_s"]
    return out


def fmt(value, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def tables(summary: dict, runs: dict, train: dict, megabytes: dict) -> str:
    lines = ["| MB | system | wall s | MB/s | peak RSS MB | own s | documents | tokens | rows | error |"]
    lines.append("|---" * 10 + "|")
    for size in megabytes:
        for system in runs:
            for row in runs[system][size]:
                mb_per_s = megabytes[size] / row["wall_s"] if row["returncode"] == 0 else None
                lines.append(
                    f"| {size} | {system} | {row['wall_s']:.1f} | {fmt(mb_per_s)} | "
                    f"{row['peak_rss_mb']:,.0f} | {fmt(row.get('seconds'), '.1f')} | {row.get('documents', '-')} | "
                    f"{row.get('tokens', '-')} | {row.get('train_rows', '-')} | {row.get('error', '')} |"
                )
    lines += ["", "| MB | kerasboost MB/s / baseline MB/s |", "|---|---|"]
    lines += [f"| {s} | {r:.2f} |" for s, r in summary["ratio_mb_per_s"].items()]
    lines += ["", "| system | time exponent | time largest / smallest | RSS growth MB | RSS largest / smallest |"]
    lines.append("|---" * 5 + "|")
    for system, entry in summary["systems"].items():
        g = entry["growth"]
        lines.append(
            f"| {system} | {fmt(g.get('exponent'))} | {fmt(g.get('time_largest_over_smallest'))} | "
            f"{fmt(g.get('rss_growth_mb'), ',.0f')} | {fmt(g.get('rss_largest_over_smallest'))} |"
        )
    if train:
        lines += [
            "",
            "| store of MB | run wall s | to step 1 s | peak RSS MB | store reused | error |",
            "|---" * 6 + "|",
        ]
        for size, row in train.items():
            lines.append(
                f"| {size} | {row['wall_s']:.1f} | {fmt(row['first_step_s'], '.1f')} | "
                f"{row['peak_rss_mb']:,.0f} | {row['reused']} | {row.get('error', '')} |"
            )
    return "\n".join(lines)


def prepare_and_baseline(corpus: Path, tag: str, scratch: Path, env: dict, args) -> tuple[dict, dict]:
    """One `kerasboost prepare` (its store and cache are kept for the training run), then one baseline."""
    data = [f"data.source={corpus}", "data.format=text", f"data.store={scratch / f'store-{tag}'}", *args.extra]
    command = [sys.executable, "-m", "kerasboost", "prepare", str(RECIPE), *sets(data), "--json"]
    kb_env = dict(env, KERASBOOST_CACHE_DIR=str(scratch / f"cache-{tag}"))
    row, lines = measure(command, kb_env, scratch, scratch / f"prepare-{tag}.log")
    kerasboost = {**row, **last_json(lines)}
    hf_cache = scratch / f"hf-{tag}"
    command = [sys.executable, __file__, "--baseline", str(corpus), "--cache-dir", str(hf_cache)]
    hf_env = dict(env, HF_HOME=str(hf_cache), HF_DATASETS_CACHE=str(hf_cache))
    row, lines = measure([*command, "--num-proc", str(args.num_proc)], hf_env, scratch, scratch / f"hf-{tag}.log")
    shutil.rmtree(hf_cache, ignore_errors=True)
    return kerasboost, {**row, **last_json(lines)}


def train_once(corpus: Path, tag: str, scratch: Path, env: dict, args) -> dict:
    """`kerasboost run` of the tiny model for 1 step on the store `prepare_and_baseline` left for `tag`."""
    data = [f"data.source={corpus}", "data.format=text", f"data.store={scratch / f'store-{tag}'}", *args.extra]
    command = [sys.executable, "-m", "kerasboost", "run", str(RECIPE), *sets(data + TINY_RUN)]
    command += ["--output-dir", str(scratch / f"run-{tag}")]
    kb_env = dict(env, KERASBOOST_CACHE_DIR=str(scratch / f"cache-{tag}"))
    row, lines = measure(command, kb_env, scratch, scratch / f"run-{tag}.log")
    first = next((t for t, line in lines if re.match(r"step\s+1/", line)), None)
    row["first_step_s"] = None if first is None else round(first, 3)
    row["reused"] = any(line.startswith("data:") and "(reused)" in line for _, line in lines)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,30,100", help="corpus sizes in MB")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--workdir", type=Path, help="corpora are kept here (default: a temp dir, deleted)")
    parser.add_argument("--num-proc", type=int, default=2, help="the baseline's map processes")
    parser.add_argument("--backend", help="KERAS_BACKEND for kerasboost")
    parser.add_argument("--set", dest="extra", action="append", default=[], help="more kerasboost overrides")
    parser.add_argument("--no-train", action="store_true", help="skip the 1-step training runs")
    parser.add_argument("--baseline", help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline:
        return baseline(args.baseline, args.cache_dir, args.num_proc)
    header = describe()
    sizes = sorted({f"{float(size):g}" for size in args.sizes.split(",")}, key=float)  # labels: "30"
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kerasboost-data-bench-"))
    scratch = workdir / "scratch"  # stores, caches, runs, logs: deleted at the end
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    if args.backend:
        env["KERAS_BACKEND"] = args.backend
    try:
        files = python_files()
        corpora = {size: workdir / f"corpus-{size}mb.txt" for size in sizes}
        for size, path in corpora.items():
            build_corpus(path, float(size), files)
        megabytes = {size: path.stat().st_size / 1e6 for size, path in corpora.items()}
        warm = "import keras, keras_hub, datasets, tokenizers, transformers, kerasboost.cli"
        subprocess.run([sys.executable, "-c", warm], env=env, cwd=scratch, capture_output=True)  # disk cache, untimed
        print(f"corpora: {len(files):,} files -> " + ", ".join(str(p) for p in corpora.values()), flush=True)
        runs: dict = {"kerasboost": {s: [] for s in sizes}, "baseline": {s: [] for s in sizes}}
        latest: dict = {}  # size -> tag of its last prepare, whose store the training run reads
        for repeat, size in itertools.product(range(args.repeats), sizes):
            if size in latest:  # only the last store of each size is kept
                for kind in ("store", "cache"):
                    shutil.rmtree(scratch / f"{kind}-{latest[size]}", ignore_errors=True)
            latest[size] = tag = f"{size}mb-r{repeat}"
            rows = prepare_and_baseline(corpora[size], tag, scratch, env, args)
            for system, row in zip(runs, rows):
                runs[system][size].append(row)
                print(
                    f"repeat {repeat + 1}/{args.repeats} {size} MB {system:<10} {row['wall_s']:7.1f} s "
                    f"{row['peak_rss_mb']:8,.0f} MB RSS {row.get('error', '')}",
                    flush=True,
                )
        train = {}
        for size in [] if args.no_train else sizes:
            if runs["kerasboost"][size][-1]["returncode"] == 0:  # else no store to start from
                train[size] = train_once(corpora[size], latest[size], scratch, env, args)
                print(f"run on the {size} MB store: {train[size]['wall_s']:.1f} s", flush=True)
        summary = summarise(runs, megabytes)
        if len(train) >= 2:
            small, large = train[min(train, key=float)], train[max(train, key=float)]
            summary["train_growth"] = {
                "startup_difference_s": large["wall_s"] - small["wall_s"],
                "rss_growth_mb": large["peak_rss_mb"] - small["peak_rss_mb"],
            }
        print("\n" + "\n".join(f"{key}: {header[key]}" for key in ("command", "date", "commit", "nproc")) + "\n")
        print(tables(summary, runs, train, megabytes))
        if "train_growth" in summary:
            growth = summary["train_growth"]
            print(
                f"\nrun start-up, largest store - smallest: {growth['startup_difference_s']:+.1f} s, "
                f"RSS {growth['rss_growth_mb']:+,.0f} MB"
            )
        print(json.dumps({**header, "megabytes": megabytes, "runs": runs, "summary": summary, "train": train}))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
