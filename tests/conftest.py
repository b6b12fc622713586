import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import helpers  # noqa: E402,F401  (snapshots the environment before any test imports TensorFlow)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """Longest tests first: with two workers, a long test that starts last runs alone at the end. Tests that
    share a module-scoped fixture (one run per backend, say) go to one worker as a group (`--dist loadgroup`),
    so the run is made once, not once on each worker."""
    longest = ("test_backends.py", "test_bench.py")
    items.sort(key=lambda item: item.path.name not in longest)
    for item in items:
        shared = [
            f"{name}={item.callspec.params[name]}"
            for name in getattr(getattr(item, "callspec", None), "params", {})
            if item._fixtureinfo.name2fixturedefs.get(name, [None])[-1] is not None
            and item._fixtureinfo.name2fixturedefs[name][-1].scope == "module"
        ]
        if shared:
            item.add_marker(pytest.mark.xdist_group(f"{item.module.__name__}:{','.join(shared)}"))
