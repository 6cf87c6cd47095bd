"""The model-agnostic core: masks, criteria, allocation, selection, schedules
and the `sparsify` optax transformation. Pure functions over pytrees."""
