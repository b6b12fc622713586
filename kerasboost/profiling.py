"""Each backend's own profiler behind one context manager, and where its trace says the time went.

TensorFlow and JAX write an XPlane trace (`*.xplane.pb`) that TensorBoard's profile plugin shows
(`pip install xprof`, then `tensorboard --logdir DIR`); PyTorch writes a Chrome trace (`*.pt.trace.json`,
for Perfetto or chrome://tracing). `OpTimes.top` ranks the operations by the time they ran: for TensorFlow
the executor's kernels, for JAX the compiled program's (XLA) operations, for PyTorch the self CPU time of
aten operators. Times add up over every thread, so on a machine with several cores their sum exceeds
the wall time; the shares are what matter.
"""

from __future__ import annotations

import collections
import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import keras


@dataclass
class OpTimes:
    """Milliseconds each kind of operation ran for, summed over threads, from one profiled stretch."""

    milliseconds: dict[str, float] = field(default_factory=dict)

    def top(self, count: int, steps: int) -> list[dict]:
        total = sum(self.milliseconds.values()) or 1.0
        ranked = sorted(self.milliseconds.items(), key=lambda item: -item[1])[:count]
        return [{"op": name, "ms_per_step": ms / steps, "share": ms / total} for name, ms in ranked]


@contextlib.contextmanager
def profile_trace(directory: Path):
    """Profiles the body with the current backend's profiler into `directory`; yields the OpTimes, filled
    in when the body is done."""
    directory.mkdir(parents=True, exist_ok=True)
    times = OpTimes()
    backend = keras.backend.backend()
    if backend == "torch":
        import torch.profiler

        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
            yield times
        profiler.export_chrome_trace(str(directory / "trace.pt.trace.json"))
        averages = profiler.key_averages()
        times.milliseconds = {
            event.key: event.self_cpu_time_total / 1e3
            for event in averages
            if event.key.startswith("aten::") and event.self_cpu_time_total > 0
        }
        return
    if backend == "jax":
        import jax

        jax.profiler.start_trace(str(directory))
        try:
            yield times
        finally:
            jax.profiler.stop_trace()
    else:
        import tensorflow as tf

        tf.profiler.experimental.start(str(directory))
        try:
            yield times
        finally:
            tf.profiler.experimental.stop()
    newest = max(directory.rglob("*.xplane.pb"), key=lambda path: path.stat().st_mtime)
    times.milliseconds = xplane_op_times(newest, backend)


def xplane_op_times(path: Path, backend: str) -> dict[str, float]:
    """Milliseconds per operation kind in an XPlane file. TensorFlow's executor threads (`tf_Compute`)
    name kernels `scope/name:Type` (kept: Type); XLA's threads (`tf_XLA...`) name operations `fusion.12`,
    `dot.3` (kept: the name without its number; loops and calls that hold other operations are left out,
    so nothing counts twice). Executor and thread-pool bookkeeping (`A::B`, `end: ...` markers) is left out."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    space.ParseFromString(path.read_bytes())
    totals: collections.Counter = collections.Counter()
    for plane in space.planes:
        names = plane.event_metadata
        for line in plane.lines:
            named = [(names[event.metadata_id].name, event) for event in line.events]
            named = [(name, event) for name, event in named if "::" not in name and not name.startswith("end: ")]
            if backend == "tensorflow" and line.name.startswith("tf_Compute"):
                kinds = [(name.rpartition(":")[2], event) for name, event in named if ":" in name]
            elif backend == "jax" and line.name.startswith("tf_XLA"):
                kinds = [(re.sub(r"[._]\d+$", "", name), event) for name, event in _leaves(named)]
            else:
                continue
            for kind, event in kinds:
                totals[kind] += event.duration_ps / 1e9
    return dict(totals)


def _leaves(named: list) -> list:
    """The (name, event) pairs of one thread whose event holds no other (a loop's body counts, not the loop)."""
    ordered = sorted(named, key=lambda pair: pair[1].offset_ps)
    return [
        (name, event)
        for (name, event), following in zip(ordered, [*ordered[1:], None])
        if following is None or following[1].offset_ps >= event.offset_ps + event.duration_ps
    ]
