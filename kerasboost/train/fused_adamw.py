"""AdamW for TensorFlow: TensorFlow's one-pass `ApplyAdam` kernel, on sparse gradients summed first.

Speed: Keras' Adam update is about ten graph operations per variable (two moment updates, a square
root, a divide, the bias-corrected step size, each its own kernel and its own pass over the variable),
so in graph mode, where nothing fuses them (kerasboost's choice on CPUs, see `backend.jit_compile`), the
update of a BERT-size model is some 800 kernel launches and a dozen passes over its 4 M parameters.
`ResourceApplyAdam` does the same arithmetic in one pass per variable: `m += (g - m)(1 - β₁)`,
`v += (g² - v)(1 - β₂)`, `θ -= lr·√(1 - β₂ᵗ)/(1 - β₁ᵗ) · m / (√v + ε)`, Keras' formula to the letter
(epsilon unscaled). Weight decay is one multiply per variable, the global norm one `L2Loss` per
gradient. Under XLA the kernel compiles like any other operation.

Correctness: an embedding lookup's gradient is a `tf.IndexedSlices` with one row per token, so a row is
repeated as often as its token occurs. Keras' Adam squares those rows one by one (`v` gets Σg² instead
of (Σg)²), which over-steps every repeated row, up to √n times for a row seen n times, as BERT's
segment embedding is in every position. Here sparse gradients are summed into dense ones first, so
TensorFlow trains exactly as JAX and PyTorch do (their gradients are dense).

Clipping, the learning-rate schedule, accumulation, the weight-decay exclusions and the slot variables
are Keras' own, so checkpoints are interchangeable with `keras.optimizers.AdamW` on every backend.
Measured in docs/performance.md.
"""

from __future__ import annotations

import keras


class FusedAdamW(keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` with the Adam update as one TensorFlow kernel per variable (TensorFlow only)."""

    def __init__(self, *args, **kwargs):
        if keras.backend.backend() != "tensorflow":
            raise ValueError(
                "FusedAdamW runs TensorFlow's ApplyAdam kernel; use keras.optimizers.AdamW on other backends"
            )
        super().__init__(*args, **kwargs)
        self._powers = None

    def _clip_gradients(self, grads):
        """Sparse gradients summed into dense ones (see the module docstring), then Keras' global-norm
        clipping with the norm from one `L2Loss` kernel per gradient instead of a square and a sum."""
        import tensorflow as tf

        grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
        if not self.global_clipnorm or self.clipnorm or self.clipvalue:
            return super()._clip_gradients(grads)
        norm = tf.sqrt(2.0 * tf.add_n([tf.nn.l2_loss(tf.cast(g, "float32")) for g in grads if g is not None]))
        # As Keras: a no-op below the threshold, NaN (not a silent skip) when the norm is not finite.
        scale = self.global_clipnorm * tf.minimum(1.0 / norm, 1.0 / self.global_clipnorm) + (norm - norm)
        return [g if g is None else g * tf.cast(scale, g.dtype) for g in grads]

    def _apply_weight_decay(self, variables):
        """Done in `update_step`, one multiply per variable just before its Adam update."""

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        # β₁ᵗ and β₂ᵗ once per step, not once per variable.
        step = keras.ops.cast(self.iterations + 1, "float32")
        self._powers = (keras.ops.power(self.beta_1, step), keras.ops.power(self.beta_2, step))
        try:
            super()._backend_update_step(grads, trainable_variables, learning_rate)
        finally:
            self._powers = None

    def update_step(self, gradient, variable, learning_rate):
        import tensorflow as tf

        dtype = variable.dtype
        if self.weight_decay and self._use_weight_decay(variable):
            variable.assign_sub(variable * tf.cast(learning_rate * self.weight_decay, dtype))
        if self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        index = self._get_variable_index(variable)
        beta_1_power, beta_2_power = (tf.cast(power, dtype) for power in self._powers)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=self._momentums[index].value.handle,
            v=self._velocities[index].value.handle,
            beta1_power=beta_1_power,
            beta2_power=beta_2_power,
            lr=tf.cast(learning_rate, dtype),
            beta1=tf.cast(self.beta_1, dtype),
            beta2=tf.cast(self.beta_2, dtype),
            epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype),
        )
