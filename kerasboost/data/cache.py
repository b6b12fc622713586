"""A cache for derived data that is slow to compute and fully determined by its inputs.

Trained WordPiece vocabularies live here (keras-hub's trainer takes ~12 s on the built-in corpus, the
tokenising itself under a second), so a rerun, a variant recipe or a resumed run skips the training.
The key is a SHA-256 of everything the result depends on; entries are written atomically. The cache
sits in $KERASBOOST_CACHE_DIR, else $XDG_CACHE_HOME/kerasboost, else ~/.cache/kerasboost;
KERASBOOST_CACHE_DIR=off turns it off. An unwritable cache is skipped, never an error.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Optional


def cache_dir() -> Optional[Path]:
    configured = os.environ.get("KERASBOOST_CACHE_DIR")
    if configured == "off":
        return None
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kerasboost"


def cached_text(kind: str, inputs: Iterable[str], build: Callable[[], str]) -> str:
    """`build()`'s text, from the cache when the same `inputs` were seen before."""
    directory = cache_dir()
    digest = hashlib.sha256()
    for part in inputs:
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    path = directory / kind / f"{digest.hexdigest()}.txt" if directory else None
    if path is not None and path.is_file():
        return path.read_text(encoding="utf-8")
    text = build()
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, delete=False) as handle:
                handle.write(text)
            os.replace(handle.name, path)
        except OSError:
            pass
    return text
