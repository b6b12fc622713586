import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import helpers  # noqa: E402,F401  (snapshots the environment before any test imports TensorFlow)


def pytest_collection_modifyitems(items):
    """Longest tests first: with two workers, a long test that starts last runs alone at the end."""
    longest = ("test_backends.py", "test_bench.py")
    items.sort(key=lambda item: item.path.name not in longest)
