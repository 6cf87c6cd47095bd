"""Exact top-k by threshold search, global selection and the patterns."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparsejax as sj
from sparsejax.core import prune as prune_lib
from sparsejax.core import select


def reference_topk(scores, k):
  """Stable sort on (-score, index): k largest, ties to the lowest index."""
  s = np.nan_to_num(np.asarray(scores, np.float32).ravel(), nan=-np.inf)
  order = np.lexsort((np.arange(s.size), -s))
  keep = np.zeros(s.size, bool)
  keep[order[:k]] = True
  return keep.reshape(np.shape(scores))


@pytest.mark.parametrize('seed,wide', [(0, False), (1, False), (2, True)])
def test_topk_matches_reference_with_ties(seed, wide, monkeypatch):
  if wide:   # 16-bit digits (used from WIDE_FROM keys on) on a small array
    monkeypatch.setattr(select, 'WIDE_FROM', 1)
  rng = np.random.default_rng(seed)
  scores = rng.integers(-3, 4, size=(37, 11)).astype(np.float32)  # many ties
  scores[rng.random(scores.shape) < 0.05] = np.nan
  scores[0, 0], scores[1, 1] = np.inf, -np.inf
  for k in [0, 1, 5, 100, 406, 407]:
    got = np.asarray(sj.topk_mask(jnp.asarray(scores), k))
    np.testing.assert_array_equal(got, reference_topk(scores, k), err_msg=f'k={k}')


@pytest.mark.parametrize('shape', [(5, 7, 9), (300,), (2, 3, 4, 5), (1024, 520)])
def test_ties_broken_by_flat_index_in_any_rank(shape):
  # ties go through the second radix select on flat indices (no ravel or cumsum)
  scores = np.random.default_rng(3).integers(0, 3, size=shape).astype(np.float32)
  idx = np.asarray(select.flat_index(shape))
  np.testing.assert_array_equal(idx, np.arange(idx.size).reshape(shape))
  for k in [1, 17, idx.size // 2, idx.size - 1]:
    np.testing.assert_array_equal(np.asarray(jax.jit(select.topk_mask, static_argnums=1)(
        jnp.asarray(scores), k)), reference_topk(scores, k), err_msg=f'{shape} k={k}')
  forced = np.asarray(select.force_argmax(select.ordered_keys(jnp.asarray(scores))))
  assert (forced == select.FORCED).sum() == 1
  assert (forced == select.FORCED).ravel().argmax() == scores.ravel().argmax()


def test_topk_continuous_and_jit():
  x = jax.random.normal(jax.random.key(0), (300, 200))
  fn = jax.jit(select.topk_mask)
  for k in [1, 777, 59999]:
    got = np.asarray(fn(x, k))
    assert got.sum() == k
    np.testing.assert_array_equal(got, reference_topk(np.asarray(x), k))


def test_negative_zero_ties_positive_zero():
  x = jnp.array([0.0, -0.0, 0.0, -0.0])
  np.testing.assert_array_equal(select.topk_mask(x, 2), [True, True, False, False])


def test_where_excludes_entries():
  x = jnp.array([5.0, 4.0, 3.0, 2.0])
  where = jnp.array([False, True, True, True])
  np.testing.assert_array_equal(select.topk_mask(x, 2, where), [False, True, True, False])
  # Excluded entries come last, even below -inf.
  np.testing.assert_array_equal(
      select.topk_mask(jnp.array([5.0, -jnp.inf]), 2, jnp.array([False, True])), [True, True])


def test_global_topk_one_threshold_ties_to_earlier_leaf():
  a = jnp.array([3.0, 1.0, 2.0])
  b = jnp.array([[2.0, 5.0], [0.5, 2.0]])
  keys = [select.ordered_keys(a), select.ordered_keys(b)]
  ma, mb = select.global_topk_masks(keys, 3)   # 5, 3, then the first 2 (in a)
  np.testing.assert_array_equal(ma, [True, False, True])
  np.testing.assert_array_equal(mb, [[False, True], [False, False]])


def test_keep_count():
  assert int(select.keep_count(1000, 0.0)) == 1000
  assert int(select.keep_count(1000, 0.999)) == 1
  assert int(select.keep_count(1000, 0.9999)) == 1
  assert int(select.keep_count(235200, 0.9)) == 23520


def test_nm_by_hand():
  scores = jnp.array([[1.0, 4.0, 2.0, 3.0, 5.0, 5.0, 5.0, 5.0]])
  got = select.NM(2, 4, axis=-1).select(scores)
  np.testing.assert_array_equal(got, [[False, True, False, True, True, True, False, False]])


@pytest.mark.parametrize('n,m', [(1, 4), (2, 4), (3, 8), (1, 2)])
def test_nm_counts_along_default_input_axis(n, m):
  w = jax.random.normal(jax.random.key(1), (16, 6))
  mask = np.asarray(select.NM(n, m).select(jnp.abs(w)))
  groups = mask.reshape(16 // m, m, 6)
  assert np.all(groups.sum(axis=1) == n)


def test_nm_errors():
  with pytest.raises(ValueError, match='0 < N < M'):
    select.NM(4, 4)
  with pytest.raises(ValueError, match="M=4 does not divide.*'enc/w'"):
    select.NM(2, 4).check('enc/w', (6, 8))


def test_structured_keeps_whole_columns():
  w = jnp.array([[1.0, 0.1, 3.0], [1.0, 0.1, -3.0]])
  mask = np.asarray(select.Structured(axis=-1).expand(
      select.topk_mask_from_keys(select.Structured(axis=-1).unit_keys(jnp.abs(w)), 2), w.shape))
  np.testing.assert_array_equal(mask, [[True, False, True], [True, False, True]])


def test_block_keeps_whole_blocks():
  w = jnp.zeros((4, 4)).at[2:, :2].set(1.0)
  pat = select.Block((2, 2))
  keep = select.topk_mask_from_keys(pat.unit_keys(w), 1)
  mask = np.asarray(pat.expand(keep, w.shape))
  expected = np.zeros((4, 4), bool)
  expected[2:, :2] = True
  np.testing.assert_array_equal(mask, expected)
  with pytest.raises(ValueError, match="does not tile.*'x'"):
    pat.check('x', (3, 4))


@pytest.mark.parametrize('pattern', [sj.Structured(), sj.Structured(axis=-2, reduce='l2'),
                                     sj.Block((2, 4)), sj.NM(2, 4)])
def test_patterns_through_prune(pattern):
  params = {'w': jax.random.normal(jax.random.key(3), (8, 16))}
  _, masks = sj.prune(params, 0.5, pattern=pattern)
  assert int(sj.total_active(masks)) == 64


def test_unknown_pattern():
  with pytest.raises(ValueError, match="'diagonal'"):
    sj.make_pattern('diagonal')


def test_select_masks_needs_targets():
  params = {'w': jnp.ones((2, 2))}
  with pytest.raises(ValueError, match="'w'"):
    prune_lib.select_masks(params, sj.dense_masks(params), {})


def test_random_keys_distinct_seeded_and_uniform():
  """select.random_keys (SET's growth order): distinct and >= 1, the same for
  the same key, and a top-k over them picks every entry about equally often
  and independently of its neighbour (each of 4,096 entries, k = 512 of them,
  over 400 keys: expected 50 picks each)."""
  shape = (64, 64)
  a = np.asarray(select.random_keys(shape, jax.random.key(3)))
  assert a.dtype == np.uint32 and a.min() >= 1 and np.unique(a).size == a.size
  np.testing.assert_array_equal(a, select.random_keys(shape, jax.random.key(3)))
  pick = jax.jit(jax.vmap(lambda k: select.topk_mask_from_keys(
      select.random_keys(shape, k), 512)))
  picks = np.asarray(pick(jax.random.split(jax.random.key(0), 400))).reshape(400, -1)
  assert np.all(picks.sum(axis=1) == 512)
  counts = picks.sum(axis=0)                   # Binomial(400, 1/8): mean 50, sd 6.6
  assert abs(counts.mean() - 50) < 1e-9 and 4.5 < counts.std() < 8.5
  assert counts.min() > 15 and counts.max() < 90
  chi2 = ((counts - 50.0) ** 2 / 50.0).sum()  # ~ 4,095 dof: mean 4,095, sd 90
  assert chi2 < 4095 + 5 * 90 / (7 / 8) ** 0.5
  # picks of neighbouring entries (flat index i and i+1) are uncorrelated
  corr = np.corrcoef(picks[:, :-1].ravel(), picks[:, 1:].ravel())[0, 1]
  assert abs(corr) < 0.02
  # successive keys pick nearly independent sets: overlap about k/8 = 64
  overlap = (picks[:-1] & picks[1:]).sum(axis=1)
  assert 55 < overlap.mean() < 73
