"""Watching an evaluation metric: the best checkpoint (`checkpoint.best`) and early stopping
(`train.early_stopping`).

Our own rather than Keras' `EarlyStopping` and `ModelCheckpoint(save_best_only=True)`: those watch
Keras epochs and their logs, while here an evaluation is kerasboost's (validation metrics plus the
task's extras such as macro-F1, every `train.eval_every` steps), its state must travel in our checkpoints
so that a resumed run decides exactly as an uninterrupted one, and the best weights must reach every
export. Patience counts evaluations without an improvement larger than `min_delta`, as transformers'
EarlyStoppingCallback does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kerasboost.errors import InputError


@dataclass
class Watch:
    """The best value of one metric so far (by `mode`), its step, and evaluations since it improved."""

    key: str  # the recipe key that asked for it, for error messages
    metric: str
    mode: str
    min_delta: float = 0.0
    best: float | None = None
    best_step: int | None = None
    waited: int = 0

    def update(self, entry: dict, step: int) -> bool:
        """Takes one evaluation (a metrics.jsonl entry); whether it is the new best."""
        if self.metric not in entry:
            known = ", ".join(sorted(name for name in entry if name.startswith("val_")))
            raise InputError(f"{self.key}.metric: the run records no {self.metric!r} (it has {known})")
        value = float(entry[self.metric])
        if math.isnan(value):
            better = False  # a NaN is never the best, nor does it count as one
        elif self.best is None:
            better = True
        elif self.mode == "min":
            better = value < self.best - self.min_delta
        else:
            better = value > self.best + self.min_delta
        if better:
            self.best, self.best_step, self.waited = value, step, 0
        else:
            self.waited += 1
        return better

    def state(self) -> dict:
        return {"best": self.best, "best_step": self.best_step, "waited": self.waited}

    def restore(self, state: dict | None) -> None:
        if state:
            self.best, self.best_step, self.waited = state["best"], state["best_step"], state["waited"]

    def describe(self) -> str:
        return f"{self.metric} {self.best:.4f} at step {self.best_step}"


def watches(early_stopping, best) -> dict[str, Watch]:
    """The watches a recipe asks for, by role ("early_stopping", "best")."""
    found = {}
    if early_stopping is not None:
        found["early_stopping"] = Watch(
            "train.early_stopping", early_stopping.metric, early_stopping.mode, early_stopping.min_delta
        )
    if best is not None:
        found["best"] = Watch("checkpoint.best", best.metric, best.mode)
    return found


def watch_state(found: dict[str, Watch]) -> dict:
    """What a checkpoint keeps of them."""
    return {role: watch.state() for role, watch in found.items()}
