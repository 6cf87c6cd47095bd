"""Paired comparisons of two runs on the same test examples.

Two models evaluated on one test set make errors on mostly the same
examples, so the difference of their accuracies is far better determined
than either accuracy: resampling the examples jointly (a paired bootstrap,
Efron & Tibshirani 1993, ch. 16; the usual test in NLP, Koehn 2004) gives a
confidence interval for the difference that a comparison of two means with
their separate standard errors overstates. Several seeds per arm pair up
seed by seed, or all runs of an arm are averaged per example first.
"""

from __future__ import annotations

import numpy as np


def paired_bootstrap(a, b, resamples: int = 2000, seed: int = 0, level: float = 0.95
                     ) -> tuple[float, float, float]:
  """(mean(a - b), low, high): the percentile interval of the mean
  difference over `resamples` resamplings of the examples (axis 0; further
  axes, e.g. seeds or tokens, are averaged within an example first)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape:
    raise ValueError(f'paired arrays must have one shape, got {a.shape} and {b.shape}')
  if a.ndim == 0 or a.shape[0] < 2:
    raise ValueError('a paired bootstrap needs at least 2 examples')
  diff = (a - b).reshape(a.shape[0], -1).mean(axis=1)
  idx = np.random.default_rng(seed).integers(0, len(diff), (resamples, len(diff)))
  means = diff[idx].mean(axis=1)
  tail = 100 * (1 - level) / 2
  low, high = np.percentile(means, [tail, 100 - tail])
  return float(diff.mean()), float(low), float(high)
