"""The only place that picks the Keras backend, seeds the run and sets the precision policy.

Keras fixes its backend when it is first imported, so `select_backend` must run before anything
imports keras. TensorFlow is imported on every backend (tf.data, tokenizers, summaries); its C++
start-up chatter is silenced here for users.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kerasboost.errors import InputError
from kerasboost.recipe import BACKENDS, TrainConfig

_QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "GRPC_VERBOSITY": "ERROR",
    "GLOG_minloglevel": "3",
}


def resolve_backend(cli_backend: str | None, recipe_backend: str | None) -> str:
    """`--backend` > `KERAS_BACKEND` > recipe `backend:` > ~/.keras/keras.json > tensorflow."""
    env_backend = os.environ.get("KERAS_BACKEND") or None
    for origin, name in (("--backend", cli_backend), ("KERAS_BACKEND", env_backend), ("backend", recipe_backend)):
        if name:
            if name not in BACKENDS:
                raise InputError(f"{origin}: unknown backend '{name}' (choose from {', '.join(BACKENDS)})")
            return name
    return _keras_json_backend() or "tensorflow"


def _keras_json_backend() -> str | None:
    keras_home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    try:
        name = json.loads((keras_home / "keras.json").read_text()).get("backend")
    except (OSError, ValueError):
        return None
    return name if name in BACKENDS else None


def select_backend(name: str) -> None:
    """Sets KERAS_BACKEND and imports TensorFlow quietly; must run before keras is imported."""
    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != name:
            raise RuntimeError(f"keras was already imported with backend {keras.backend.backend()!r}")
    os.environ["KERAS_BACKEND"] = name
    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if name == "jax":
        # Keep TensorFlow (used only for tf.data here) from grabbing accelerator memory.
        os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    with _stderr_silenced():
        import tensorflow as tf  # noqa: F401  (imported here so its start-up noise is swallowed)
    if name != "tensorflow":
        tf.config.set_visible_devices([], "GPU")


@contextlib.contextmanager
def _stderr_silenced():
    """TensorFlow's C++ logs before absl is initialised bypass TF_CPP_MIN_LOG_LEVEL; drop fd 2 briefly."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and the backend's RNG (keras.utils.set_random_seed covers all three)."""
    import keras

    keras.utils.set_random_seed(seed)


def global_random_state() -> dict:
    """The backend's process-wide random state that a run draws from, for checkpoints. Only PyTorch has
    one in use: Keras' dropout there takes torch's global generator when its seed generator was made
    without a seed (its "fast path"). TensorFlow and JAX draw from seed generators only."""
    import keras

    if keras.backend.backend() != "torch":
        return {}
    import torch

    state = {"torch": torch.get_rng_state().numpy().tolist()}
    if torch.cuda.is_available():
        state["torch_cuda"] = [s.numpy().tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_global_random_state(state: dict) -> None:
    """Puts back what `global_random_state` saved (nothing on other backends)."""
    if "torch" not in state:
        return
    import torch

    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["torch_cuda"]])


@dataclass(frozen=True)
class Precision:
    """A resolved `train.precision`: the Keras dtype policy, and why `auto` chose it ("" otherwise)."""

    policy: str
    reason: str = ""

    def __str__(self) -> str:
        return self.policy + (f" (auto: {self.reason})" if self.reason else "")


def resolve_precision(setting: str) -> Precision:
    """`train.precision` for this backend and hardware: `auto` is mixed_bfloat16 where the backend computes
    bfloat16 natively, else float32. Measured on an AVX512-BF16 CPU (tools/bench.py, docs/performance.md):
    bf16 trains faster than fp32 under TensorFlow and PyTorch, while XLA's CPU backend under JAX emulates
    bf16 matmuls through fp32 and is slower.
    """
    import keras

    resolved = Precision(setting)
    if setting == "auto":
        unit = _bfloat16_unit()
        reason = unit or f"no native bfloat16 compute for {keras.backend.backend()} here"
        resolved = Precision("mixed_bfloat16" if unit else "float32", reason)
    if resolved.policy == "mixed_float16" and keras.backend.backend() == "jax" and jax_has_only_cpus():
        raise InputError("train.precision: mixed_float16 is not supported by XLA on CPU under JAX; use mixed_bfloat16")
    return resolved


def use_precision(setting: str) -> Precision:
    """Resolves `setting` and makes it Keras' global dtype policy (which layers read when they are built)."""
    import keras

    resolved = resolve_precision(setting)
    keras.config.set_dtype_policy(resolved.policy)
    return resolved


def jit_compile(setting):
    """`train.jit_compile` for `compile`; `auto` leaves the choice to Keras (XLA wherever the model allows)
    except under TensorFlow without a GPU or TPU, where TensorFlow's own graph kernels (oneDNN, with
    AVX512-BF16 where the CPU has it) train faster than XLA's CPU backend, with the feed-forward GELU
    alone compiled by XLA (models/fused_gelu.py), as measured with `kerasboost bench` on BERT and GPT-2
    in float32 and mixed_bfloat16 (docs/performance.md). JAX always
    compiles with XLA; PyTorch stays eager (torch.compile was slower here)."""
    import keras

    if setting != "auto" or keras.backend.backend() != "tensorflow":
        return setting
    import tensorflow as tf

    has_accelerator = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU")
    return "auto" if has_accelerator else False


def steps_per_execution(config: TrainConfig, log_every: int, several_per_call: bool = True) -> int:
    """Micro-batches per compiled call: `train.steps_per_execution`, or for `auto` the largest number up to
    16 that divides both the evaluation and the logging interval (`log_every`, so both land between calls).
    PyTorch: 1, Keras' torch trainer runs one step per call; 1 too where the distribution engine cannot run
    several (`several_per_call` False), and there a larger explicit value is refused."""
    import keras

    if keras.backend.backend() == "torch":
        return 1
    if not several_per_call:
        if config.steps_per_execution not in ("auto", 1):
            raise InputError(
                f"train.steps_per_execution: {config.steps_per_execution} steps per call fail under "
                "tf.distribute.MirroredStrategy with several replicas (Keras 3.15); use auto or 1"
            )
        return 1
    if config.steps_per_execution != "auto":
        return config.steps_per_execution
    interval = math.gcd(config.eval_every, log_every) * config.gradient_accumulation
    return max(n for n in range(1, 17) if interval % n == 0)


def _bfloat16_unit() -> str | None:
    """What computes bfloat16 natively for the current backend: a TPU, a GPU of compute capability 8.0
    or later, or (TensorFlow, PyTorch) a CPU with AMX-BF16 or AVX512-BF16; None if nothing does."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform == "tpu":
            return "TPU"
        capability = getattr(device, "compute_capability", None)
        if device.platform == "gpu" and capability and float(capability) >= 8.0:
            return f"GPU of compute capability {capability}"
        return None
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            capability = torch.cuda.get_device_capability()
            return f"GPU of compute capability {capability[0]}.{capability[1]}" if capability >= (8, 0) else None
    else:
        import tensorflow as tf

        if tf.config.list_logical_devices("TPU"):
            return "TPU"
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
            return f"GPU of compute capability {capability[0]}.{capability[1]}" if capability >= (8, 0) else None
    return _cpu_bfloat16_unit()


def _cpu_bfloat16_unit() -> str | None:
    try:
        flags = next(
            line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")
        ).split()
    except (OSError, StopIteration):
        return None
    for flag, name in (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16")):
        if flag in flags:
            return f"CPU with {name}"
    return None


def jax_has_only_cpus() -> bool:
    import jax

    return all(device.platform == "cpu" for device in jax.devices())


def versions() -> dict[str, str]:
    import keras
    import keras_hub
    import tensorflow as tf

    found = {"keras": keras.__version__, "keras-hub": keras_hub.__version__, "tensorflow": tf.__version__}
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        found["jax"] = jax.__version__
    elif backend == "torch":
        import torch

        found["torch"] = torch.__version__
    return found


def peak_memory_mib() -> float:
    """Peak accelerator memory of this process when it has an accelerator, else its peak resident memory."""
    import resource

    import keras

    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return torch.cuda.max_memory_allocated() / 2**20
    elif backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform != "cpu":
            return (device.memory_stats() or {}).get("peak_bytes_in_use", 0) / 2**20
    else:
        import tensorflow as tf

        if tf.config.list_logical_devices("GPU"):
            return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def compiled(function: Callable, static: tuple[str, ...] = ()) -> Callable:
    """`function` (pure `keras.ops` code: tensors in, tensors out, no Keras variables) as this backend runs
    such code fastest: `jax.jit` (the keyword arguments named in `static` fixed at trace time), a
    TensorFlow graph (retraced per Python value of those arguments), or eager PyTorch with autograd off."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(function, static_argnames=static)
    if backend == "tensorflow":
        import tensorflow as tf

        # No autograph: the code's loops are already graph ops (`ops.fori_loop`), and autograph would rewrite
        # the custom-gradient GELU (models/fused_gelu.py) into something that no longer returns a tensor.
        return tf.function(function, autograph=False, reduce_retracing=True)
    import torch

    def without_autograd(*args, **kwargs):
        with torch.inference_mode():
            return function(*args, **kwargs)

    return without_autograd
