"""Training: optimizer and schedule, logging callbacks, checkpoints and the one loop all tasks share."""
