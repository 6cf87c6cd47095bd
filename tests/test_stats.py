"""The paired bootstrap of programs.stats on hand cases."""

import numpy as np
import pytest

from sparsejax.programs import stats


def test_identical_runs_differ_by_exactly_zero():
  a = np.array([1.0, 0.0, 1.0, 1.0])
  assert stats.paired_bootstrap(a, a) == (0.0, 0.0, 0.0)


def test_a_constant_gap_has_a_zero_width_interval():
  b = np.random.default_rng(1).random(50)
  mean, low, high = stats.paired_bootstrap(b + 0.25, b)
  assert mean == pytest.approx(0.25) and low == pytest.approx(0.25) and high == pytest.approx(0.25)


def test_pairing_narrows_the_interval_against_unpaired_noise():
  """Two classifiers right on mostly the same examples: the paired interval
  of the accuracy difference is much narrower than the examples' spread."""
  rng = np.random.default_rng(0)
  easy = rng.random(1000) < 0.8
  a = easy.astype(float)
  b = a.copy()
  b[rng.choice(1000, 20, replace=False)] = 0.0      # b misses 20 more (some already missed)
  mean, low, high = stats.paired_bootstrap(a, b)
  assert mean == pytest.approx((a - b).mean())
  assert 0 < low < mean < high and high - low < 0.02


def test_extra_axes_average_within_an_example_and_shapes_must_match():
  a = np.ones((5, 3))
  b = np.zeros((5, 3))
  assert stats.paired_bootstrap(a, b)[0] == 1.0
  with pytest.raises(ValueError, match='one shape'):
    stats.paired_bootstrap(a, b[:4])
