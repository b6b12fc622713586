"""The token store: a task's examples, tokenised and packed once, on disk, read by row index.

Every task packs or pads its examples to fixed-length rows when the store is prepared, so a row's place is
its index and no offsets table is needed (Megatron's and nanoGPT's `.bin` + index exist for variable-length
documents). Each field of each source of each split is a list of NumPy `.npy` shards of bounded size
(a header and the raw array), opened with `np.load(mmap_mode="r")`: a batch is a fancy index into
memory-mapped files, so neither start-up nor memory grows with the corpus, and the graph of the input
pipeline holds no data (tf.data's 2 GB GraphDef limit never applies). The store is written under a
temporary name, its files fsync'd, and renamed into place after its manifest: an interrupted preparation
leaves nothing that a run would open.

Layout: `manifest.json` and `<split>/<source>/<field>-<shard>.npy`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kerasboost.errors import DataError

FORMAT = 1
MANIFEST = "manifest.json"
SHARD_BYTES = 16 * 2**20


def token_dtype(vocabulary_size: int) -> np.dtype:
    """uint16 ids while the vocabulary fits (half the disk and page cache of int32), else int32."""
    return np.dtype(np.uint16) if vocabulary_size <= 2**16 else np.dtype(np.int32)


class StoreWriter:
    """Collects rows per (split, source, field) and writes them as shards of about `shard_bytes`."""

    def __init__(self, directory: Path, shard_bytes: int = SHARD_BYTES):
        self.directory = Path(directory)
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        self.partial = Path(tempfile.mkdtemp(prefix=f".{self.directory.name}.partial-", dir=self.directory.parent))
        self.shard_bytes = shard_bytes
        self._pending: dict[tuple[str, int, str], list[np.ndarray]] = {}
        self._shards: dict[tuple[str, int, str], list[dict]] = {}

    def add(self, split: str, source: int, rows: dict[str, np.ndarray]) -> None:
        for name, values in rows.items():
            if len(values) == 0:
                continue
            key = (split, source, name)
            pending = self._pending.setdefault(key, [])
            pending.append(np.ascontiguousarray(values))
            if sum(part.nbytes for part in pending) >= self.shard_bytes:
                self._flush(key)

    def _flush(self, key: tuple[str, int, str]) -> None:
        pending = self._pending.pop(key, [])
        if not pending:
            return
        split, source, name = key
        shards = self._shards.setdefault(key, [])
        relative = Path(split) / str(source) / f"{name}-{len(shards):05d}.npy"
        path = self.partial / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = sum(len(part) for part in pending)
        header = {
            "descr": np.lib.format.dtype_to_descr(pending[0].dtype),
            "fortran_order": False,
            "shape": (rows, *pending[0].shape[1:]),
        }
        with open(path, "wb") as handle:  # the .npy header, then the parts as they are: no concatenated copy
            np.lib.format.write_array_header_1_0(handle, header)
            for part in pending:
                handle.write(part.astype(pending[0].dtype, copy=False).tobytes())
            handle.flush()
            os.fsync(handle.fileno())
        shards.append({"file": str(relative), "rows": rows})

    def commit(self, manifest: dict) -> Path:
        """Writes the remaining shards and the manifest, then moves the store into place."""
        for key in list(self._pending):
            self._flush(key)
        splits: dict = {}
        for (split, source, name), shards in sorted(self._shards.items()):
            sources = splits.setdefault(split, {})
            sources.setdefault(str(source), {})[name] = shards
        manifest = {**manifest, "format": FORMAT, "splits": splits}
        with open(self.partial / MANIFEST, "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            if is_store(self.directory) and TokenStore(self.directory).manifest.get("key") != manifest.get("key"):
                shutil.rmtree(self.directory)  # a stale store of other inputs at the same place
            elif self.directory.is_dir() and not any(self.directory.iterdir()):
                self.directory.rmdir()
            os.replace(self.partial, self.directory)
        except OSError:
            if not is_store(self.directory):
                raise
            self.abort()  # another process (of a distributed run) committed the same store first
        _fsync_directory(self.directory.parent)
        return self.directory

    def abort(self) -> None:
        shutil.rmtree(self.partial, ignore_errors=True)


def _fsync_directory(path: Path) -> None:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


@dataclass
class SourceRows:
    """The rows one source contributes to a split: memory-mapped shards of every field."""

    fields: dict[str, list[np.ndarray]]
    rows: int

    def gather(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """Rows `indices` (any order, repeats allowed) of every field, as in-memory arrays."""
        return {name: _gather(shards, indices) for name, shards in self.fields.items()}


def _gather(shards: list[np.ndarray], indices: np.ndarray) -> np.ndarray:
    if len(shards) == 1:
        return np.asarray(shards[0][indices])
    ends = np.cumsum([len(shard) for shard in shards])
    which = np.searchsorted(ends, indices, side="right")
    starts = ends - np.array([len(shard) for shard in shards])
    out = np.empty((len(indices), *shards[0].shape[1:]), shards[0].dtype)
    for shard in np.unique(which):
        chosen = which == shard
        out[chosen] = shards[shard][indices[chosen] - starts[shard]]
    return out


@dataclass
class StoreSplit:
    """One split (train or validation) of a store: its sources' rows."""

    sources: list[SourceRows]

    @property
    def rows(self) -> int:
        return sum(source.rows for source in self.sources)

    @property
    def field_names(self) -> list[str]:
        return list(self.sources[0].fields) if self.sources else []

    def head(self, count: int | None = None) -> dict[str, np.ndarray]:
        """The first `count` rows (all without it), source after source, in memory."""
        parts, wanted = [], self.rows if count is None else min(count, self.rows)
        for source in self.sources:
            take = min(wanted, source.rows)
            if take:
                parts.append(source.gather(np.arange(take)))
            wanted -= take
        return {name: np.concatenate([part[name] for part in parts]) for name in self.field_names}


class TokenStore:
    """A prepared store, opened read-only; `manifest` holds what it was prepared from."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        path = self.directory / MANIFEST
        try:
            self.manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise DataError(f"{path}: not a readable kerasboost token store ({err})") from None
        if self.manifest.get("format") != FORMAT:
            raise DataError(f"{path}: a token store of format {self.manifest.get('format')}; expected {FORMAT}")

    def split(self, name: str) -> StoreSplit:
        sources = self.manifest["splits"].get(name, {})
        opened = []
        for source in sorted(sources, key=int):
            fields = {
                field: [self._open(shard["file"]) for shard in shards] for field, shards in sources[source].items()
            }
            rows = {field: sum(len(shard) for shard in shards) for field, shards in fields.items()}
            if len(set(rows.values())) != 1:
                raise DataError(f"{self.directory}: split {name}, source {source}: fields of unequal length {rows}")
            opened.append(SourceRows(fields, next(iter(rows.values()))))
        return StoreSplit(opened)

    def _open(self, relative: str) -> np.ndarray:
        path = self.directory / relative
        try:
            return np.load(path, mmap_mode="r")
        except (OSError, ValueError) as err:
            raise DataError(f"{path}: damaged token store shard ({err}); prepare the store again") from None

    @property
    def bytes(self) -> int:
        return sum(path.stat().st_size for path in self.directory.rglob("*") if path.is_file())


def is_store(directory: Path) -> bool:
    return (Path(directory) / MANIFEST).is_file()
