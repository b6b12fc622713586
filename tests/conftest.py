import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import helpers  # noqa: E402,F401  (snapshots the environment before any test imports TensorFlow)
