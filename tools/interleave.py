"""Interleaved measurements for the benchmarks in tools/: each system in a fresh process per repeat (Keras
fixes its backend at import), the systems taken in turn within each repeat so that the machine's drift
falls on all of them alike."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def interleaved(script: str, systems: list[str], arguments: list[str], repeats: int) -> dict[str, list[dict]]:
    """Runs `python SCRIPT --child SYSTEM ARGUMENTS` for every system, `repeats` rounds; each child prints one
    JSON line last. Returns the rows by system (a failed child is reported on stderr and left out)."""
    results: dict[str, list[dict]] = {system: [] for system in systems}
    for _ in range(repeats):
        for system in systems:
            command = [sys.executable, script, "--child", system, *arguments]
            process = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ))
            if process.returncode != 0:
                print(f"{system} failed: {process.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                continue
            row = json.loads(process.stdout.strip().splitlines()[-1])
            print(json.dumps(row), flush=True)
            results[system].append(row)
    return results
