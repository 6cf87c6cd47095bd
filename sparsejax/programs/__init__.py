"""Programs: host-side Python that spans several training runs (IMP levels
with controls, prune-then-fine-tune, sweeps) and the report of their results."""
