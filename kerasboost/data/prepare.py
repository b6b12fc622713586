"""Preparation: sources ► documents ► tokenizer ► task examples ► token store, as one stream.

Documents are read one at a time (data/sources.py), assigned to the training or validation split by
document, tokenised in bounded batches on every core while the next ones are read, packed into the task's
rows and written as shards (data/store.py), so memory stays flat whatever the corpus size. The store is
keyed by a SHA-256 of everything its rows depend on (the sources' paths, sizes and modification times, the
data settings, the task, the seed and the tokenizer's full identity): `kerasboost run` reuses a store that
`kerasboost prepare` (or an earlier run) made for the same inputs, and prepares it otherwise.
"""

from __future__ import annotations

import atexit
import collections
import ctypes
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from kerasboost.architectures import architecture
from kerasboost.data.builtin import Document
from kerasboost.data.cache import cache_dir, digest, evict, touch
from kerasboost.data.causal import CausalPacker
from kerasboost.data.classification import TextEncoder, label_names
from kerasboost.data.mlm import SequencePacker
from kerasboost.data.nsp import PairBuilder, split_segments
from kerasboost.data.sources import ReadReport, fingerprint, iter_documents
from kerasboost.data.store import StoreWriter, TokenStore, is_store, token_dtype
from kerasboost.data.tokenizer import build_tokenizer, tokenize_stream, tokenizer_identity
from kerasboost.errors import DataError
from kerasboost.recipe import Recipe
from kerasboost.rundir import RunDir

BATCH_CHARS = 2**20  # text per tokenisation batch: bounded memory, enough work per tf.data call
TRIM_EVERY = 16  # batches between handing freed heap memory back to the operating system
SETTINGS = ("format", "document_split", "field", "label_field", "max_documents", "validation_split", "sequence_length")


@dataclass
class PreparedData:
    """A prepared store, opened, with the tokenizer whose ids it holds."""

    store: TokenStore
    tokenizer: Any
    weights: tuple[float, ...]
    labels: list[str] | None
    stats: dict = field(default_factory=dict)

    def save_tokenizer(self, run: RunDir) -> None:
        """Puts the tokenizer's files into the run directory (where it keeps them for resume and export)."""
        for path in (self.store.directory / "tokenizer").glob("*"):
            if not (run.root / path.name).is_file():
                shutil.copy(path, run.root / path.name)

    def describe(self, unit: str) -> str:
        stats = self.stats
        how = "reused" if stats["reused"] else f"prepared in {stats['seconds']:.1f} s"
        documents = stats["documents"]
        line = (
            f"data: {documents['train']:,} training / {documents['validation']:,} validation documents -> "
            f"{stats['train_rows']:,} / {stats['validation_rows']:,} {unit} · store {self.store.directory} ({how})"
        )
        return line + (f" ({stats['skipped']})" if stats.get("skipped") else "")


def prepare_data(recipe: Recipe, run: RunDir | None = None, progress: TextIO | None = sys.stderr) -> PreparedData:
    """The recipe's token store (reused when one was prepared for the same inputs) and its tokenizer; the
    tokenizer's files also go into `run`."""
    started = time.perf_counter()
    data = recipe.data
    vocabulary_key = digest(["vocabulary", *_inputs(recipe, with_validation=False)])
    location = _location(recipe, vocabulary_key)
    existing = TokenStore(location) if is_store(location) else None
    trained = None
    if existing is not None and existing.manifest.get("vocabulary_key") == vocabulary_key:
        trained = RunDir(location / "tokenizer")
    with tempfile.TemporaryDirectory() as scratch:
        own = run or RunDir(Path(scratch))
        identity = [vocabulary_key]
        tokenizer = build_tokenizer(
            recipe.model, data, own, lambda: _training_texts(recipe, progress), identity, trained
        )
        names = _run_labels(recipe, run)
        key = digest([*_inputs(recipe, with_validation=True), json.dumps(names), *tokenizer_identity(tokenizer)])
        weights = tuple(source.weight for source in data.sources)
        if existing is not None:
            if existing.manifest.get("key") == key:
                touch(location)
                stats = {**existing.manifest["stats"], "reused": True, "seconds": time.perf_counter() - started}
                return PreparedData(existing, tokenizer, weights, existing.manifest.get("labels"), stats)
            if data.store:
                raise DataError(
                    f"data.store: {location} holds a store prepared from other sources, settings or another "
                    "tokenizer; remove it or point data.store elsewhere"
                )
        store = _write_store(recipe, tokenizer, own, location, key, vocabulary_key, names, progress, started)
    if not data.store:
        evict(keep=location)
    return PreparedData(store, tokenizer, weights, store.manifest.get("labels"), store.manifest["stats"])


def _inputs(recipe: Recipe, with_validation: bool) -> list[str]:
    """What a store's rows (or, without validation sources, its vocabulary) depend on, bar the tokenizer."""
    data = recipe.data
    inputs = ["kerasboost-store", "1", recipe.task, recipe.model.backbone, str(recipe.seed)]
    inputs.append(json.dumps(data.model_dump(include=set(SETTINGS)), sort_keys=True))
    inputs.append(json.dumps(data.model_dump(include={"vocabulary_size", "vocabulary_sample_mb", "lowercase"})))
    if recipe.task == "bert_pretraining":
        inputs.append(str(data.next_sentence_rate))
    inputs += [str(data.vocabulary), str(data.merges), str(recipe.model.preset)]
    for source in data.sources:
        inputs += [source.path, str(source.weight), *fingerprint(source.path)]
    if with_validation:
        for source in data.validation_sources:
            inputs += ["validation", source.path, *fingerprint(source.path, "data.validation_source")]
    return inputs


def _location(recipe: Recipe, vocabulary_key: str) -> Path:
    """data.store, else the cache's store for these inputs, else (cache off) a directory removed at exit."""
    if recipe.data.store:
        path = Path(recipe.data.store)
        if path.exists() and not is_store(path) and (not path.is_dir() or any(path.iterdir())):
            raise DataError(f"data.store: {path} exists and is not a kerasboost token store")
        return path
    directory = cache_dir()
    if directory is not None:
        return directory / "stores" / digest([vocabulary_key, *_inputs(recipe, with_validation=True)])[:32]
    scratch = Path(tempfile.mkdtemp(prefix="kerasboost-store-"))
    atexit.register(shutil.rmtree, scratch, True)
    return scratch / "store"


def _run_labels(recipe: Recipe, run: RunDir | None) -> list[str] | None:
    if run is not None and recipe.task == "classification" and run.labels_file.is_file():
        return json.loads(run.labels_file.read_text(encoding="utf-8"))
    return None


def held_out(seed: int, source: int, index: int, share: float) -> bool:
    """Whether document `index` of source `source` is validation data: a hash of the three below `share`."""
    value = (seed * 0x9E3779B97F4A7C15 + source * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) % 2**64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) % 2**64
    return (value ^ (value >> 31)) / 2**64 < share


def split_documents(recipe: Recipe, report: ReadReport) -> Iterator[tuple[str, int, Document]]:
    """(split, source, document) for every document: validation ones from data.validation_source, else
    each document held out with probability data.validation_split (by document, deterministically); a
    source too small to have any held out gives its last document to validation."""
    data = recipe.data
    labels = recipe.task == "classification"
    share = 0.0 if data.validation_sources else data.validation_split
    if share == 0.0 and not data.validation_sources:
        raise DataError(
            "data.validation_split: is 0 and no data.validation_source is given; a run needs validation data"
        )
    taken = 0
    for source, spec in enumerate(data.sources):
        held, previous = 0, None
        for index, document in enumerate(iter_documents(spec.path, data, report, labels=labels)):
            if data.max_documents is not None and taken >= data.max_documents:
                break
            taken += 1
            report.documents += 1
            split = "validation" if held_out(recipe.seed, source, index, share) else "train"
            held += split == "validation"
            if previous is not None:
                yield previous
            previous = (split, source, document)
        if previous is None:
            raise DataError(f"data.source: no documents found in {spec.path}{_skipped(report)}")
        yield ("validation", source, previous[2]) if share and not held else previous
    for spec in data.validation_sources:
        found = False
        for document in iter_documents(spec.path, data, report, key="data.validation_source", labels=labels):
            found = True
            yield "validation", 0, document
        if not found:
            raise DataError(f"data.validation_source: no documents found in {spec.path}{_skipped(report)}")


def _skipped(report: ReadReport) -> str:
    return f" ({report.describe()})" if report.skipped else ""


def _training_texts(recipe: Recipe, progress: TextIO | None) -> Iterator[str]:
    """The training documents' texts for learning the vocabulary (a seeded sample of about
    data.vocabulary_sample_mb when set)."""
    report = ReadReport()
    meter = _Progress(progress, report, "vocabulary")
    limit = recipe.data.vocabulary_sample_mb
    taken = 0
    for index, (split, _, document) in enumerate(split_documents(recipe, report)):
        meter.update()
        if split != "train":
            continue
        if limit is not None:
            if report.total_bytes and not held_out(recipe.seed + 1, 0, index, limit * 1e6 / report.total_bytes):
                continue
            if taken > limit * 1e6:
                break
        taken += len(document.text)
        yield document.text
    meter.done()


class _Progress:
    """A progress line on stderr every few seconds: MB read, MB/s, documents, tokens, ETA."""

    def __init__(self, stream: TextIO | None, report: ReadReport, what: str, every: float = 5.0):
        self.stream, self.report, self.what, self.every = stream, report, what, every
        self.started = self.last = time.perf_counter()
        self.tokens = 0

    def update(self) -> None:
        now = time.perf_counter()
        if self.stream is None or now - self.last < self.every:
            return
        self.last = now
        self.stream.write(self.line(now) + "\n")
        self.stream.flush()

    def line(self, now: float) -> str:
        done, total = self.report.bytes_read / 1e6, self.report.total_bytes / 1e6
        rate = done / max(now - self.started, 1e-9)
        eta = f" · ETA {(total - done) / rate:.0f} s" if total and rate else ""
        return (
            f"{self.what}: {done:,.1f} / {total:,.1f} MB read · {rate:.1f} MB/s · "
            f"{self.report.documents:,} documents · {self.tokens:,} tokens{eta}"
        )

    def done(self) -> None:
        if self.stream is not None and time.perf_counter() - self.started >= self.every:
            self.stream.write(self.line(time.perf_counter()) + "\n")
            self.stream.flush()


def _builders(recipe: Recipe, tokenizer):
    """A factory of the task's example builder, given (split, source); and whether a document is
    tokenised as segments (next-sentence pairs) rather than whole."""
    data = recipe.data
    spec = architecture(recipe.model.backbone)
    if recipe.task == "causal_lm":
        return (lambda split, source: CausalPacker(data.sequence_length, tokenizer.end_token_id)), False
    if recipe.task == "classification":
        start, end = spec.text_ends
        start_id = getattr(tokenizer, start) if start else None
        ids = (start_id, getattr(tokenizer, end), tokenizer.pad_token_id)
        return (lambda split, source: TextEncoder(data.sequence_length, *ids)), False
    if recipe.task == "bert_pretraining":
        ids = (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id)
        seeds = {"train": recipe.seed, "validation": recipe.seed + 1}
        return (
            lambda split, source: PairBuilder(
                data.sequence_length, data.next_sentence_rate, [seeds[split], source], ids
            )
        ), True
    start, end = (getattr(tokenizer, name) for name in spec.text_ends)
    return (lambda split, source: SequencePacker(data.sequence_length, start, end, tokenizer.pad_token_id)), False


def _write_store(
    recipe: Recipe,
    tokenizer,
    own: RunDir,
    location: Path,
    key: str,
    vocabulary_key: str,
    names: list[str] | None,
    progress: TextIO | None,
    started: float,
) -> TokenStore:
    report = ReadReport()
    meter = _Progress(progress, report, "prepare")
    make_builder, segmented = _builders(recipe, tokenizer)
    builders: dict[tuple[str, int], Any] = {}
    labels: dict[tuple[str, int], list[str]] = collections.defaultdict(list)
    documents, rows = collections.Counter(), collections.Counter()
    pending: collections.deque = collections.deque()
    failure: list[BaseException] = []
    writer = StoreWriter(location)

    def batches() -> Iterator[list[str]]:
        texts, meta, size = [], [], 0
        try:
            for split, source, document in split_documents(recipe, report):
                units = split_segments(document.text) if segmented else [document.text]
                texts.extend(units)
                meta.append((split, source, len(units), document.label))
                size += len(document.text)
                if size >= BATCH_CHARS:
                    pending.append(meta)
                    yield texts
                    texts, meta, size = [], [], 0
            if meta:
                pending.append(meta)
                yield texts
        except BaseException as err:  # tf.data would turn it into an opaque error: re-raised below
            failure.append(err)

    try:
        for batch, token_ids in enumerate(tokenize_stream(tokenizer, batches(), recipe.data.num_workers)):
            if batch % TRIM_EVERY == TRIM_EVERY - 1:
                _return_free_memory()
            meter.tokens += sum(len(ids) for ids in token_ids)
            grouped: dict[tuple[str, int], list] = collections.defaultdict(list)
            position = 0
            for split, source, units, label in pending.popleft():
                pieces = token_ids[position : position + units]
                position += units
                grouped[split, source].append([ids for ids in pieces if len(ids)] if segmented else pieces[0])
                if recipe.task == "classification":
                    labels[split, source].append(label)
                documents[split] += 1
            for where, docs in grouped.items():
                if where not in builders:
                    builders[where] = make_builder(*where)
                rows[where] += _add(writer, where, builders[where].add(docs), tokenizer)
            meter.update()
        if failure:
            raise failure[0]
        for where, builder in builders.items():
            try:
                rows[where] += _add(writer, where, builder.finish(), tokenizer)
            except ValueError as err:
                raise DataError(f"data.source: {where[0]} documents: {err}") from None
        _check_rows(recipe, rows, documents)
        if recipe.task == "classification":
            names = _write_labels(writer, labels, names)
        manifest = _manifest(recipe, rows, key, vocabulary_key, names, documents, meter, report, started)
        _copy_tokenizer_files(own, writer.partial / "tokenizer")
        meter.done()
        return TokenStore(writer.commit(manifest))
    finally:
        writer.abort()


def _return_free_memory() -> None:
    """glibc keeps the heap that TensorFlow's tokenising kernels free, so without a trim the resident size
    creeps up with the corpus (measured in docs/performance.md#data-preparation); elsewhere a no-op."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _glibc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _glibc()


def _add(writer: StoreWriter, where: tuple[str, int], rows: dict[str, np.ndarray], tokenizer) -> int:
    """Writes a builder's rows, their token ids in the store's narrow type (the one place they are
    narrowed, for every task); returns how many."""
    if "token_ids" not in rows:
        return 0
    rows = {**rows, "token_ids": rows["token_ids"].astype(token_dtype(tokenizer.vocabulary_size()))}
    writer.add(*where, rows)
    return len(rows["token_ids"])


def _write_labels(writer: StoreWriter, labels: dict, names: list[str] | None) -> list[str]:
    train = [label for (split, _), values in labels.items() if split == "train" for label in values]
    validation = [label for (split, _), values in labels.items() if split == "validation" for label in values]
    if names is None:
        names = label_names(train, validation)
    else:
        unknown = sorted(set(validation) - set(names))
        if unknown:
            raise DataError(f"data.label_field: labels the model was not trained on: {', '.join(unknown[:5])}")
    index = {name: i for i, name in enumerate(names)}
    for (split, source), values in labels.items():
        writer.add(split, source, {"label": np.array([index.get(value, -1) for value in values], np.int32)})
    return names


def _manifest(recipe, rows, key, vocabulary_key, names, documents, meter, report, started) -> dict:
    stats = {
        "documents": {"train": documents["train"], "validation": documents["validation"]},
        "tokens": meter.tokens,
        "train_rows": sum(count for (split, _), count in rows.items() if split == "train"),
        "validation_rows": sum(count for (split, _), count in rows.items() if split == "validation"),
        "source_bytes": report.total_bytes,
        "seconds": time.perf_counter() - started,
        "skipped": report.describe() if report.skipped else "",
        "reused": False,
    }
    return {"key": key, "vocabulary_key": vocabulary_key, "task": recipe.task, "labels": names, "stats": stats}


def _check_rows(recipe: Recipe, rows: collections.Counter, documents: collections.Counter) -> None:
    length = recipe.data.sequence_length
    for source, spec in enumerate(recipe.data.sources):
        if not rows["train", source]:
            raise DataError(
                f"data.source: {spec.path}: its training documents give no example of data.sequence_length={length} "
                "tokens"
            )
    if not any(count for (split, _), count in rows.items() if split == "validation"):
        raise DataError(
            f"data.validation_split: {documents['validation']} validation documents give no example of "
            f"data.sequence_length={length} tokens; raise data.validation_split or give data.validation_source"
        )


def _copy_tokenizer_files(run: RunDir, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("vocabulary_file", "bpe_vocabulary_file", "merges_file"):
        path = getattr(run, name)
        if path.is_file():
            shutil.copy(path, directory / path.name)
