"""Reading documents from text files and globs, JSONL, CSV and the built-in corpora.

Bad lines (not UTF-8, not JSON, empty) are skipped and counted; a missing field or column, or a
source that yields nothing, is a `DataError` naming the file. With `labels=True` every document also
carries its label (`data.label_field` of JSONL/CSV, or the built-in corpus' own). Nothing here imports
TensorFlow.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from kerasboost.data.builtin import CORPORA, Document
from kerasboost.errors import DataError
from kerasboost.recipe import BUILTIN_PREFIX, DataConfig


@dataclass
class ReadReport:
    """What was read and what was skipped, per reason, for the run's printout."""

    documents: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def describe(self) -> str:
        text = f"{self.documents} documents"
        if self.skipped:
            text += " (skipped: " + ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items())) + ")"
        return text


def read_documents(
    specs: list[str], config: DataConfig, key: str = "data.source", labels: bool = False
) -> tuple[list[Document], ReadReport]:
    """All documents of every source in `specs`, in a deterministic order."""
    report = ReadReport()
    documents: list[Document] = []
    for spec in specs:
        if spec.startswith(BUILTIN_PREFIX):
            documents.extend(_read_builtin(spec, key))
            continue
        paths = sorted(glob.glob(spec))
        if not paths:
            raise DataError(f"{key}: no file matches '{spec}'")
        for path in paths:
            documents.extend(_read_file(Path(path), config, report, labels))
    if config.max_documents is not None:
        documents = documents[: config.max_documents]
    if not documents:
        raise DataError(f"{key}: no documents found in {', '.join(specs)}")
    report.documents = len(documents)
    return documents, report


def _read_builtin(spec: str, key: str) -> list[Document]:
    name = spec.removeprefix(BUILTIN_PREFIX)
    if name not in CORPORA:
        raise DataError(
            f"{key}: unknown built-in corpus '{spec}' (available: {', '.join(BUILTIN_PREFIX + n for n in CORPORA)})"
        )
    return list(CORPORA[name]())


def _read_file(path: Path, config: DataConfig, report: ReadReport, labels: bool) -> list[Document]:
    if path.is_dir():
        raise DataError(f"{path}: is a directory; use a glob such as '{path}/*.txt'")
    fmt = config.format if config.format != "auto" else _format_of(path)
    label_field = config.label_field if labels else None
    lines = _decoded_lines(path, report)
    if fmt == "jsonl":
        return _jsonl_documents(path, lines, config.field, label_field, report)
    if fmt == "csv":
        return _csv_documents(path, lines, config.field, label_field)
    if labels:
        raise DataError(f"{path}: plain text has no labels; classification reads JSONL or CSV with data.label_field")
    return [Document(text, "") for text in _text_documents(lines, config.document_split)]


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    return {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv"}.get(suffix, "text")


def _decoded_lines(path: Path, report: ReadReport) -> list[tuple[int, str]]:
    """(line number, text) pairs; lines that are not UTF-8 are skipped and counted."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err.strerror}") from None
    lines = []
    for number, chunk in enumerate(raw.splitlines(), start=1):
        try:
            lines.append((number, chunk.decode("utf-8")))
        except UnicodeDecodeError:
            report.skip("non-UTF-8 lines")
    return lines


def _text_documents(lines: list[tuple[int, str]], split: str) -> list[str]:
    if split == "line":
        return [text.strip() for _, text in lines if text.strip()]
    documents, block = [], []
    for _, text in lines:
        if text.strip():
            block.append(text.strip())
        elif block:
            documents.append("\n".join(block))
            block = []
    if block:
        documents.append("\n".join(block))
    return documents


def _jsonl_documents(
    path: Path, lines: list[tuple[int, str]], key: str, label_key: str | None, report: ReadReport
) -> list[Document]:
    documents = []
    for number, text in lines:
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            report.skip("lines that are not JSON")
            continue
        for wanted, setting in ((key, "data.field"), (label_key, "data.label_field")):
            if wanted is not None and (not isinstance(record, dict) or wanted not in record):
                fields = ", ".join(sorted(record)) if isinstance(record, dict) else type(record).__name__
                raise DataError(f"{path}:{number}: no field '{wanted}' ({setting}); found: {fields}")
        value = record[key]
        if isinstance(value, str) and value.strip():
            documents.append(Document(value.strip(), str(record[label_key]) if label_key else ""))
        else:
            report.skip("empty records")
    return documents


def _csv_documents(path: Path, lines: list[tuple[int, str]], column: str, label_column: str | None) -> list[Document]:
    reader = csv.DictReader(io.StringIO("\n".join(text for _, text in lines)))
    for wanted, setting in ((column, "data.field"), (label_column, "data.label_field")):
        if wanted is not None and (reader.fieldnames is None or wanted not in reader.fieldnames):
            found = ", ".join(reader.fieldnames or [])
            raise DataError(f"{path}: no column '{wanted}' ({setting}); found: {found}")
    return [
        Document(row[column].strip(), (row.get(label_column) or "").strip() if label_column else "")
        for row in reader
        if (row.get(column) or "").strip()
    ]


def read_splits(
    config: DataConfig, seed: int, labels: bool = False
) -> tuple[list[Document], list[Document], ReadReport]:
    """Training and validation documents: `validation_source` if given, else a seeded `validation_split`."""
    documents, report = read_documents(config.sources, config, labels=labels)
    if config.validation_sources:
        validation, _ = read_documents(config.validation_sources, config, key="data.validation_source", labels=labels)
        return documents, validation, report
    if config.validation_split == 0:
        raise DataError(
            "data.validation_split: is 0 and no data.validation_source is given; a run needs validation data"
        )
    order = random.Random(seed).sample(range(len(documents)), len(documents))
    count = max(1, round(len(documents) * config.validation_split))
    if count >= len(documents):
        raise DataError(f"data.source: {len(documents)} document(s) are too few to split off validation data")
    held_out = set(order[:count])
    train = [doc for index, doc in enumerate(documents) if index not in held_out]
    validation = [doc for index, doc in enumerate(documents) if index in held_out]
    return train, validation, report
