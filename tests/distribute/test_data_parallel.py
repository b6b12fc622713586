"""Data parallel on every backend follows the single-device loss curve (same data, masks, initial weights)."""

from __future__ import annotations

from conftest import BACKEND
from runs import assert_same_curve, launch, train


def test_data_parallel_in_one_process(single_device, tmp_path, capsys):
    """JAX: 4 devices; TensorFlow: 2 logical CPUs; torch: one process is one replica (and says how to add more)."""
    replicas = {"jax": 4, "tensorflow": 2, "torch": 1}[BACKEND]
    history = train(tmp_path, "mlm", "distribution.strategy=data_parallel", f"distribution.mesh.batch={replicas}")
    printed = capsys.readouterr().out
    engine = {
        "jax": "keras.distribution.DataParallel",
        "tensorflow": "tf.distribute.MirroredStrategy",
        "torch": "torch.distributed",
    }[BACKEND]
    assert f"data parallel ({engine}" in printed and f"global batch 16, per replica {16 // replicas}" in printed, (
        printed
    )
    assert_same_curve(single_device, history)


def test_data_parallel_over_two_processes(single_device, tmp_path):
    if BACKEND == "tensorflow":  # refused up front: Keras 3.15 fails under MultiWorkerMirroredStrategy
        process = launch(tmp_path, BACKEND, 2, "distribution.strategy=data_parallel", expect_exit=2)[1]
        assert process.stderr.strip().splitlines() == [
            "error: --nproc 2: tensorflow runs one process per host (MirroredStrategy over its devices); "
            "use distribution.mesh.batch"
        ]
        assert not any(tmp_path.iterdir())
        return
    history, process = launch(tmp_path, BACKEND, 2, "distribution.strategy=data_parallel")
    assert "2 processes" in process.stdout and "per replica 8" in process.stdout, process.stdout
    assert [path.name for path in tmp_path.iterdir()] == ["run"]  # only process 0 wrote a run directory
    assert (tmp_path / "run" / "checkpoints" / "step-00000010").is_dir()
    if BACKEND == "torch":
        assert "replicas: weights identical on all 2 processes" in process.stdout, process.stdout
    assert_same_curve(single_device, history)
