"""TensorFlow: `train.clip_norm` clips the global gradient under MirroredStrategy, as on one device.

Keras' TF optimizer clips each replica's share before summing; kerasboost sums first. With a threshold
small enough to clip every step, the unfixed order drifts ~5e-4 from the single-device curve in 6 steps
(measured), the fixed one stays within 1e-4."""

from __future__ import annotations

from runs import assert_same_curve, train

CLIPPED = ("train.clip_norm=0.01", "train.steps=6")


def test_mirrored_strategy_clips_the_global_gradient(tmp_path):
    single = train(tmp_path / "single", "mlm", *CLIPPED)
    mirrored = train(
        tmp_path / "mirrored", "mlm", *CLIPPED, "distribution.strategy=data_parallel", "distribution.mesh.batch=2"
    )
    assert_same_curve(single, mirrored)
