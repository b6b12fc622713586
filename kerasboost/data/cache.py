"""A cache for derived data that is slow to compute and fully determined by its inputs.

Trained vocabularies live here, so a rerun or a variant recipe on the same corpus skips training one; so
do token stores (data/prepare.py: one directory per key under stores/). The key is a SHA-256 of everything
the result depends on; entries are written atomically. The cache sits in $KERASBOOST_CACHE_DIR, else
$XDG_CACHE_HOME/kerasboost, else ~/.cache/kerasboost; KERASBOOST_CACHE_DIR=off turns it off. It is
kept under $KERASBOOST_CACHE_MAX_MB (default 2048) by removing the least recently used entries. An
unwritable or unreadable cache is skipped, never an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path


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


def digest(inputs: Iterable[str]) -> str:
    """The SHA-256 (hex) of `inputs`, each part ended by a NUL so that no two lists collide."""
    hashed = hashlib.sha256()
    for part in inputs:
        hashed.update(part.encode("utf-8"))
        hashed.update(b"\0")
    return hashed.hexdigest()


def _entry(kind: str, inputs: Iterable[str], suffix: str) -> Path | None:
    directory = cache_dir()
    if directory is None:
        return None
    return directory / kind / f"{digest(inputs)}{suffix}"


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


def evict(keep: Path) -> None:
    """Applies the size limit now (after the token store `keep`, which stays whatever its size, was added)."""
    directory = cache_dir()
    if directory is not None:
        with contextlib.suppress(OSError):
            _evict(directory, int(os.environ.get("KERASBOOST_CACHE_MAX_MB", "2048")) * 2**20, keep)


def touch(path: Path) -> None:
    """Marks an entry (a file or a store's directory) as used now."""
    _touch(path)


def _evict(directory: Path, limit: int, keep: Path | None = None) -> None:
    """Removes the least recently used entries (files, or whole store directories) until the cache holds at
    most `limit` bytes."""
    entries = []
    for entry in directory.glob("*/*"):
        if entry.is_file():
            entries.append((entry.stat().st_mtime, entry.stat().st_size, entry))
        elif entry.is_dir():
            size = sum(path.stat().st_size for path in entry.rglob("*") if path.is_file())
            entries.append((entry.stat().st_mtime, size, entry))
    entries.sort()
    total = sum(size for _, size, _ in entries)
    for _, size, entry in entries:
        if total <= limit:
            break
        if entry == keep:
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        total -= size
