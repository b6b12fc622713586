"""A cache for derived data that is slow to compute and fully determined by its inputs.

Trained WordPiece vocabularies live here (keras-hub's trainer takes seconds even on the built-in corpus), and
so do tokenised documents (a large corpus takes minutes to tokenise, packing and masking then take
moments), so a rerun, a variant recipe or a resumed run skips both. The key is a SHA-256 of everything
the result depends on; entries are written atomically. The cache sits in $KERASBOOST_CACHE_DIR, else
$XDG_CACHE_HOME/kerasboost, else ~/.cache/kerasboost; KERASBOOST_CACHE_DIR=off turns it off. It is
kept under $KERASBOOST_CACHE_MAX_MB (default 2048) by removing the least recently used entries. An
unwritable or unreadable cache is skipped, never an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np


def cache_dir() -> Path | None:
    configured = os.environ.get("KERASBOOST_CACHE_DIR")
    if configured == "off":
        return None
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kerasboost"


def cached_text(kind: str, inputs: Iterable[str], build: Callable[[], str]) -> str:
    """`build()`'s text, from the cache when the same `inputs` were seen before."""
    path = _entry(kind, inputs, ".txt")
    if path is not None and path.is_file():
        _touch(path)
        return path.read_text(encoding="utf-8")
    text = build()
    _write(path, text.encode("utf-8"))
    return text


def cached_sequences(kind: str, inputs: Iterable[str], build: Callable[[], list[np.ndarray]]) -> list[np.ndarray]:
    """`build()`'s list of 1-D integer arrays, from the cache when the same `inputs` were seen before."""
    path = _entry(kind, inputs, ".npz")
    if path is not None and path.is_file():
        try:
            _touch(path)
            with np.load(path) as stored:
                return np.split(stored["values"], np.cumsum(stored["lengths"])[:-1])
        except (OSError, ValueError, KeyError):
            pass  # a damaged entry is rebuilt and replaced
    sequences = build()
    if path is not None:
        buffer = io.BytesIO()
        lengths = np.array([len(sequence) for sequence in sequences], np.int64)
        values = np.concatenate(sequences) if sequences else np.zeros(0, np.int32)
        np.savez(buffer, values=values, lengths=lengths)
        _write(path, buffer.getvalue())
    return sequences


def _entry(kind: str, inputs: Iterable[str], suffix: str) -> Path | None:
    directory = cache_dir()
    if directory is None:
        return None
    digest = hashlib.sha256()
    for part in inputs:
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    return directory / kind / f"{digest.hexdigest()}{suffix}"


def _write(path: Path | None, content: bytes) -> None:
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("wb", dir=path.parent, delete=False) as handle:
            handle.write(content)
        os.replace(handle.name, path)
        _evict(path.parent.parent, int(os.environ.get("KERASBOOST_CACHE_MAX_MB", "2048")) * 2**20)
    except OSError:
        pass


def _touch(path: Path) -> None:
    """Marks an entry as used now (eviction goes by modification time: access times are often not kept)."""
    with contextlib.suppress(OSError):
        os.utime(path)


def _evict(directory: Path, limit: int) -> None:
    """Removes the least recently used entries until the cache holds at most `limit` bytes."""
    entries = sorted(
        (entry.stat().st_mtime, entry.stat().st_size, entry) for entry in directory.glob("*/*") if entry.is_file()
    )
    total = sum(size for _, size, _ in entries)
    for _, size, entry in entries:
        if total <= limit:
            break
        entry.unlink(missing_ok=True)
        total -= size
