"""`kerasboost run --nproc N`: starts N local processes of the same run, wired up like a launcher would.

Each process gets the environment its backend's engine reads: torchrun's variables for torch
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), Keras' KERAS_DISTRIBUTION_* for JAX.
(TensorFlow runs one process per host; see distribute/tensorflow.py.) Process 0 prints as usual; the others'
errors are shown if one fails, and then the remaining processes are stopped (a process waiting in a
collective would wait forever).
Imports no ML library.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time

_STOP_GRACE_SECONDS = 10


def launch(run_args: list[str], nproc: int, backend: str, debug: bool = False) -> int:
    """Runs `kerasboost run RUN_ARGS` in `nproc` processes on this host; returns the exit code."""
    port = _free_port()
    command = [sys.executable, "-m", "kerasboost", *(["--debug"] if debug else []), "run", *run_args]
    processes, logs = [], []
    for rank in range(nproc):
        env = dict(os.environ, KERAS_BACKEND=backend, **_rank_env(backend, rank, nproc, port))
        # The log of a child process outlives this loop: _wait reads it, and the finally below closes it.
        log = None if rank == 0 else tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        processes.append(
            subprocess.Popen(command, env=env, stdout=log if log else None, stderr=subprocess.STDOUT if log else None)
        )
        logs.append(log)
    try:
        return _wait(processes, logs)
    finally:
        for log in logs:
            if log:
                log.close()


def _rank_env(backend: str, rank: int, nproc: int, port: int) -> dict[str, str]:
    if backend == "torch":
        return {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(nproc),
            "LOCAL_WORLD_SIZE": str(nproc),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    return {
        "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{port}",
        "KERAS_DISTRIBUTION_NUM_PROCESSES": str(nproc),
        "KERAS_DISTRIBUTION_PROCESS_ID": str(rank),
    }


def _wait(processes: list[subprocess.Popen], logs: list) -> int:
    """Waits for all; when one fails, stops the others and returns its exit code."""
    while True:
        codes = [process.poll() for process in processes]
        failed = [rank for rank, code in enumerate(codes) if code not in (None, 0)]
        if failed:
            rank = failed[0]
            _stop(processes)
            if rank != 0 or codes[0] is None:
                _show(rank, logs[rank], codes[rank])
            return codes[rank]
        if all(code == 0 for code in codes):
            return 0
        time.sleep(0.2)


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + _STOP_GRACE_SECONDS
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()


def _show(rank: int, log, code: int) -> None:
    if log is None:
        return
    log.seek(0)
    lines = log.read().strip().splitlines()
    print(f"process {rank} exited with code {code}:", file=sys.stderr)
    print("\n".join(lines[-20:]), file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
