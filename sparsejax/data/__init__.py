"""Datasets (the training stack's data layer)."""
