"""Reading documents as streams: text, JSONL, CSV (each maybe gzip/bzip2/xz/zstd compressed), Parquet,
Arrow and Hugging Face `datasets` directories, and the built-in corpora.

Sources can be far larger than memory, so every file is read in bounded chunks or record batches and
documents are yielded one by one, in a deterministic order (files sorted). Bad lines (not UTF-8, not
JSON, empty) are skipped and counted; a missing field or column, a corrupt file, or a source that
yields nothing is a `DataError` naming the file (and line or byte where known). With `labels=True`
every document also carries its label (`data.label_field`, or the built-in corpus' own). Nothing here
imports TensorFlow; pyarrow and zstandard are imported only when a source needs them.
"""

from __future__ import annotations

import bz2
import csv
import glob
import gzip
import json
import lzma
import os
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO

from kerasboost.data.builtin import CORPORA, Document
from kerasboost.errors import DataError
from kerasboost.recipe import BUILTIN_PREFIX, DataConfig

_CHUNK = 1 << 20  # decompressed bytes per read: big enough to decode fast, small enough to bound memory
_RAW_CHUNK = 1 << 16  # compressed bytes fed to zstd at a time (bounds its output per step for sane ratios)
_BATCH_ROWS = 4096  # rows per Parquet record batch
_COMPRESSION = {".gz": "gzip", ".bz2": "bzip2", ".xz": "xz", ".zst": "zstd", ".zstd": "zstd"}
_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet", ".arrow": "arrow"}


@dataclass
class ReadReport:
    """What was read and what was skipped, per reason, for the run's printout; bytes for progress and ETA."""

    documents: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    bytes_read: int = 0  # of the source files (compressed bytes for compressed files), as reading goes
    total_bytes: int = 0  # sizes of all files of the sources whose iteration has started

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def describe(self) -> str:
        text = f"{self.documents} documents"
        if self.skipped:
            text += " (skipped: " + ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items())) + ")"
        return text


# --- which files a spec names ---------------------------------------------------------------------


def source_files(spec: str, key: str = "data.source") -> list[Path]:
    """The files of one spec: a file, a glob, or a directory (its files below, sorted, hidden ones
    skipped); a Hugging Face datasets directory stands for itself. Built-in corpora have no files."""
    if spec.startswith(BUILTIN_PREFIX):
        return []
    path = Path(spec)
    matches = [path] if path.exists() else [Path(match) for match in sorted(glob.glob(spec, recursive=True))]
    files: list[Path] = []
    for match in matches:
        files.extend(_directory_files(match) if match.is_dir() and not _is_datasets_dir(match) else [match])
    if not files:
        raise DataError(f"{key}: no file matches '{spec}'")
    return files


def _directory_files(root: Path) -> list[Path]:
    found = []
    for directory, subdirectories, names in os.walk(root):
        here = Path(directory)
        subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
        for name in list(subdirectories):
            if _is_datasets_dir(here / name):  # read whole, not as loose .arrow and .json files
                subdirectories.remove(name)
                found.append(here / name)
        found.extend(here / name for name in names if not name.startswith("."))
    return sorted(found)


def _is_datasets_dir(path: Path) -> bool:
    """Written by `datasets`' `Dataset.save_to_disk` (state.json) or `DatasetDict.save_to_disk`."""
    return path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file())


def _dataset_arrow_files(directory: Path) -> list[Path]:
    """The .arrow shards of a datasets directory, in order; a DatasetDict's `train` split."""
    if (directory / "dataset_dict.json").is_file():
        splits = _load_json(directory / "dataset_dict.json").get("splits") or sorted(
            entry.name for entry in directory.iterdir() if entry.is_dir()
        )
        if "train" not in splits:
            raise DataError(f"{directory}: a DatasetDict with no 'train' split (splits: {', '.join(splits)})")
        directory = directory / "train"
    state = _load_json(directory / "state.json") if (directory / "state.json").is_file() else {}
    names = [entry["filename"] for entry in state.get("_data_files", [])]
    files = [directory / name for name in names] or sorted(directory.glob("*.arrow"))
    if not files:
        raise DataError(f"{directory}: a datasets directory with no .arrow files")
    return files


def _load_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: cannot read: {_one_line(err)}") from None
    if not isinstance(value, dict):
        raise DataError(f"{path}: expected a JSON object")
    return value


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(file.stat().st_size for file in _dataset_arrow_files(path))
    return path.stat().st_size


def fingerprint(spec: str, key: str = "data.source") -> list[str]:
    """Cheap strings that change when the content of a spec changes (path, size, mtime of each file;
    a built-in corpus' name and the Python whose standard library it is read from), for a cache key."""
    if spec.startswith(BUILTIN_PREFIX):
        _builtin(spec, key)  # only checks the name: the corpus is built when read
        return [spec, sys.version]
    files: list[Path] = []
    for path in source_files(spec, key):
        if path.is_dir():
            arrow = _dataset_arrow_files(path)
            directories = sorted({path, *(file.parent for file in arrow)})
            files += arrow + [json_file for directory in directories for json_file in sorted(directory.glob("*.json"))]
        else:
            files.append(path)
    return [f"{file.resolve()}:{stat.st_size}:{stat.st_mtime_ns}" for file in files for stat in [file.stat()]]


# --- documents --------------------------------------------------------------------------------------


def iter_documents(
    spec: str, config: DataConfig, report: ReadReport, key: str = "data.source", labels: bool = False
) -> Iterator[Document]:
    """The documents of one spec, streamed; updates `report`'s skips and bytes (the caller counts
    documents and applies data.max_documents)."""
    if spec.startswith(BUILTIN_PREFIX):
        yield from _builtin(spec, key)()
        return
    paths = source_files(spec, key)
    report.total_bytes += sum(_size(path) for path in paths)
    label_field = config.label_field if labels else None
    for path in paths:
        start = report.bytes_read
        if path.is_dir():
            for shard in _dataset_arrow_files(path):
                yield from _arrow_documents(shard, config.field, label_field, report)
        else:
            yield from _file_documents(path, config, label_field, report)
        report.bytes_read = start + _size(path)


def read_documents(
    specs: list[str], config: DataConfig, key: str = "data.source", labels: bool = False
) -> tuple[list[Document], ReadReport]:
    """All documents of every source in `specs` (up to data.max_documents) as a list, for small inputs."""
    report = ReadReport()
    streams = (document for spec in specs for document in iter_documents(spec, config, report, key, labels))
    documents = list(islice(streams, config.max_documents))
    if not documents:
        raise DataError(f"{key}: no documents found in {', '.join(specs)}")
    report.documents = len(documents)
    return documents, report


def _builtin(spec: str, key: str) -> Callable[[], tuple[Document, ...]]:
    name = spec.removeprefix(BUILTIN_PREFIX)
    if name not in CORPORA:
        raise DataError(
            f"{key}: unknown built-in corpus '{spec}' (available: {', '.join(BUILTIN_PREFIX + n for n in CORPORA)})"
        )
    return CORPORA[name]


def _file_documents(path: Path, config: DataConfig, label_field: str | None, report: ReadReport) -> Iterator[Document]:
    compression = _COMPRESSION.get(path.suffix.lower())
    fmt = config.format if config.format != "auto" else _format_of(path)
    if fmt in ("parquet", "arrow"):
        if compression:
            raise DataError(f"{path}: a {compression}-compressed {fmt} file cannot be streamed; decompress it")
        reader = _parquet_documents if fmt == "parquet" else _arrow_documents
        yield from reader(path, config.field, label_field, report)
        return
    batches = _line_batches(path, compression, report)
    if fmt == "jsonl":
        yield from _jsonl_documents(path, batches, config.field, label_field, report)
    elif fmt == "csv":
        yield from _csv_documents(path, batches, config.field, label_field)
    elif label_field is not None:
        raise DataError(f"{path}: plain text has no labels; classification reads JSONL or CSV with data.label_field")
    else:
        yield from (Document(text, "") for text in _text_documents(batches, config.document_split))


def _format_of(path: Path) -> str:
    name = path.name.lower()
    if path.suffix.lower() in _COMPRESSION:
        name = name[: -len(path.suffix)]
    return _FORMATS.get(Path(name).suffix, "text")


# --- bytes and lines ----------------------------------------------------------------------------------


def _chunks(path: Path, compression: str | None, report: ReadReport) -> Iterator[bytes]:
    """The (decompressed) bytes of `path` in bounded chunks; `report.bytes_read` follows the file bytes consumed."""
    start = report.bytes_read
    try:
        raw = open(path, "rb")  # noqa: SIM115 (closed below, also when the consumer stops early)
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err.strerror}") from None
    with raw:
        pieces, errors = _decompressed(raw, compression)
        while True:
            try:
                chunk = next(pieces, b"")
            except errors as err:
                if compression is None:
                    raise DataError(f"{path}: cannot read: {_one_line(err)}") from None
                raise DataError(f"{path}: truncated or corrupt {compression} data near byte {raw.tell()}") from None
            report.bytes_read = start + raw.tell()
            if not chunk:
                return
            yield chunk


def _decompressed(raw: BinaryIO, compression: str | None) -> tuple[Iterator[bytes], tuple[type[BaseException], ...]]:
    """Chunks of decompressed data, and the errors that mean the data is truncated or corrupt."""
    errors: tuple[type[BaseException], ...] = (EOFError, OSError, zlib.error, lzma.LZMAError)
    if compression == "zstd":
        import zstandard

        return _zstd_chunks(raw, zstandard), (*errors, zstandard.ZstdError)
    # gzip, bz2 and lzma raise EOFError on a stream that ends early, rather than returning less.
    stream: Any = raw
    if compression == "gzip":
        stream = gzip.GzipFile(fileobj=raw)
    elif compression == "bzip2":
        stream = bz2.BZ2File(raw)
    elif compression == "xz":
        stream = lzma.LZMAFile(raw)  # noqa: SIM115 (nothing of its own to close; raw is closed)
    return iter(lambda: stream.read(_CHUNK), b""), errors


def _zstd_chunks(raw: BinaryIO, zstandard: Any) -> Iterator[bytes]:
    """zstd frames one after another. Not `stream_reader`, which ends silently on a truncated frame."""
    decompressor = zstandard.ZstdDecompressor()
    current, fed = decompressor.decompressobj(), False
    for data in iter(lambda: raw.read(_RAW_CHUNK), b""):
        while data:
            output, fed = current.decompress(data), True
            if output:
                yield output
            data = b""
            if current.eof:
                data, current, fed = current.unused_data, decompressor.decompressobj(), False
    if fed and not current.eof:
        raise EOFError("zstd data ended inside a frame")


def _line_batches(path: Path, compression: str | None, report: ReadReport) -> Iterator[tuple[int, list[str | None]]]:
    """(number of the first line, lines) per chunk, split on \\n, \\r\\n and \\r like `bytes.splitlines`.
    Each chunk is decoded whole; only one that is not UTF-8 is decoded line by line, and a line that
    is not UTF-8 becomes None (counted as skipped)."""
    number, pending = 1, []
    for chunk in _chunks(path, compression, report):
        cut, at_newline = chunk.rfind(b"\n"), True
        if cut < 0:  # maybe a file with \r line ends; not a final \r, which may begin a \r\n
            cut, at_newline = chunk.rfind(b"\r", 0, len(chunk) - 1), False
        if cut < 0:
            pending.append(chunk)
            continue
        pending.append(chunk[:cut])
        block = b"".join(pending)
        pending = [chunk[cut + 1 :]]
        if at_newline and block.endswith(b"\r"):
            block = block[:-1]
        lines = _decode(block, report)
        yield number, lines
        number += len(lines)
    tail = b"".join(pending)
    if tail:
        yield number, _decode(tail[:-1] if tail.endswith(b"\r") else tail, report)


def _decode(block: bytes, report: ReadReport) -> list[str | None]:
    """The lines of `block` (lines joined by their ends, the last one's end removed)."""
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        lines: list[str | None] = []
        for raw in block.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"):
            try:
                lines.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                report.skip("non-UTF-8 lines")
                lines.append(None)
        return lines
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.split("\n")  # type: ignore[return-value]


def _text_documents(batches: Iterable[tuple[int, list[str | None]]], split: str) -> Iterator[str]:
    """Stripped non-blank lines, or blocks of them between blank lines joined by \\n."""
    if split == "line":
        for _, lines in batches:
            for line in lines:
                if line is not None and (text := line.strip()):
                    yield text
        return
    block: list[str] = []
    for _, lines in batches:
        for line in lines:
            if line is None:
                continue
            if text := line.strip():
                block.append(text)
            elif block:
                yield "\n".join(block)
                block = []
    if block:
        yield "\n".join(block)


def _jsonl_documents(
    path: Path, batches: Iterable[tuple[int, list[str | None]]], key: str, label_key: str | None, report: ReadReport
) -> Iterator[Document]:
    for first, lines in batches:
        for number, text in enumerate(lines, start=first):
            if text is None or not text.strip():
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
                yield Document(value.strip(), str(record[label_key]) if label_key else "")
            else:
                report.skip("empty records")


def _csv_documents(
    path: Path, batches: Iterable[tuple[int, list[str | None]]], column: str, label_column: str | None
) -> Iterator[Document]:
    """Rows with a non-blank `column`; the csv module joins quoted fields that span lines."""
    lines = (line + "\n" for _, block in batches for line in block if line is not None)
    reader = csv.DictReader(lines)
    try:
        names = reader.fieldnames
        for wanted, setting in ((column, "data.field"), (label_column, "data.label_field")):
            if wanted is not None and (names is None or wanted not in names):
                raise DataError(f"{path}: no column '{wanted}' ({setting}); found: {', '.join(names or [])}")
        for row in reader:
            text = (row.get(column) or "").strip()
            if text:
                yield Document(text, (row.get(label_column) or "").strip() if label_column else "")
    except csv.Error as err:
        raise DataError(f"{path}:{reader.line_num}: bad CSV: {err}") from None


# --- Parquet and Arrow --------------------------------------------------------------------------------


def _parquet_documents(path: Path, column: str, label_column: str | None, report: ReadReport) -> Iterator[Document]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: not a Parquet file ({_one_line(err)})") from None
    columns = _columns(path, parquet.schema_arrow.names, column, label_column)
    start, size, rows, done = report.bytes_read, path.stat().st_size, max(parquet.metadata.num_rows, 1), 0
    batches = parquet.iter_batches(columns=columns, batch_size=_BATCH_ROWS)
    for batch in _arrow_batches(path, batches, "Parquet"):
        yield from _batch_documents(batch, [0, 1][: len(columns)], report)
        done += batch.num_rows
        report.bytes_read = start + size * done // rows


def _arrow_documents(path: Path, column: str, label_column: str | None, report: ReadReport) -> Iterator[Document]:
    """An Arrow IPC stream (what `datasets` writes) or an Arrow IPC file, record batch by record batch."""
    import pyarrow as pa

    start, size = report.bytes_read, path.stat().st_size
    try:
        source = pa.memory_map(str(path))
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: cannot read: {_one_line(err)}") from None
    with source:
        try:
            stream = pa.ipc.open_stream(source)
            schema, batches = stream.schema, iter(stream)
        except pa.ArrowException:
            try:
                source.seek(0)
                random_access = pa.ipc.open_file(source)
            except pa.ArrowException as err:
                raise DataError(f"{path}: not an Arrow file ({_one_line(err)})") from None
            schema = random_access.schema
            batches = (random_access.get_batch(i) for i in range(random_access.num_record_batches))
        indices = [schema.get_field_index(name) for name in _columns(path, schema.names, column, label_column)]
        for batch in _arrow_batches(path, batches, "Arrow"):
            yield from _batch_documents(batch, indices, report)
            report.bytes_read = start + min(source.tell(), size)


def _arrow_batches(path: Path, batches: Iterator[Any], kind: str) -> Iterator[Any]:
    """`batches`, with a corrupt one turned into a one-line DataError."""
    import pyarrow as pa

    while True:
        try:
            batch = next(batches, None)
        except (pa.ArrowException, OSError) as err:
            raise DataError(f"{path}: cannot read {kind} data ({_one_line(err)})") from None
        if batch is None:
            return
        yield batch


def _columns(path: Path, names: list[str], column: str, label_column: str | None) -> list[str]:
    wanted = [column] + ([label_column] if label_column else [])
    for name, setting in zip(wanted, ("data.field", "data.label_field")):
        if name not in names:
            raise DataError(f"{path}: no column '{name}' ({setting}); found: {', '.join(names)}")
    return wanted


def _batch_documents(batch: Any, indices: list[int], report: ReadReport) -> Iterator[Document]:
    """Documents of one record batch (text column, then label column if any); nulls and blanks skipped."""
    texts = batch.column(indices[0]).to_pylist()
    labels = batch.column(indices[1]).to_pylist() if len(indices) > 1 else None
    for row, value in enumerate(texts):
        if not isinstance(value, str) or not (text := value.strip()):
            report.skip("empty records")
        elif labels is None:
            yield Document(text, "")
        elif labels[row] is None:
            report.skip("records without a label")
        else:
            yield Document(text, str(labels[row]))


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
