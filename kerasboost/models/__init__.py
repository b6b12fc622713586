"""Models: a keras-hub backbone (from config or a local preset) and the task heads on top of it."""
