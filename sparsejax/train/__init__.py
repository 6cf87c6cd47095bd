"""The training stack: sharded jitted steps, data feeds, orbax checkpoints,
metrics, and `train_and_evaluate` (in `loop`), driven by typed settings."""
