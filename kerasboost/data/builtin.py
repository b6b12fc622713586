"""Built-in corpora that need no download, so the default recipe runs offline on any machine.

`builtin:pydocs` is the docstrings of the Python standard library that runs kerasboost, read with
`ast` (nothing is imported or executed) in sorted file order, so it is the same on every run.
Each document remembers its top-level module, which makes a ready labelled set for classification.
"""

from __future__ import annotations

import ast
import functools
import inspect
import sysconfig
import warnings
from dataclasses import dataclass
from pathlib import Path

_SKIPPED_DIRS = {
    "site-packages",
    "dist-packages",
    "test",
    "tests",
    "idlelib",
    "lib2to3",
    "turtledemo",
    "ensurepip",
    "__pycache__",
}
_MIN_CHARS = 40


@dataclass(frozen=True)
class Document:
    text: str
    label: str


@functools.lru_cache(maxsize=1)
def pydocs() -> tuple[Document, ...]:
    """Docstrings (modules, classes, functions) of at least 40 characters, labelled by top-level module."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(path for path in root.rglob("*.py") if not _SKIPPED_DIRS.intersection(path.relative_to(root).parts))
    documents = []
    for path in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SyntaxWarning)
                tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError, OSError):
            continue
        label = path.relative_to(root).parts[0].removesuffix(".py")
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                text = ast.get_docstring(node, clean=False)
                if text:
                    text = inspect.cleandoc(text)
                    if len(text) >= _MIN_CHARS:
                        documents.append(Document(text, label))
    return tuple(documents)


TOPICS = ("asyncio", "email", "logging", "unittest", "xml")


def pydocs_topics() -> tuple[Document, ...]:
    """A labelled set for classification: the docstrings of five packages, labelled by package."""
    return tuple(document for document in pydocs() if document.label in TOPICS)


CORPORA = {"pydocs": pydocs, "pydocs-topics": pydocs_topics}
