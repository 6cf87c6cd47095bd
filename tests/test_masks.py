"""Masks on Linen params, NNX state and plain dicts: creation, counts,
density, overlap, validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparsejax as sj
from sparsejax.core import masks as masks_lib
from sparsejax.core import tree as tree_lib
from conftest import dict_params, linen_params, nnx_state


def test_default_rule_prunes_matrices_only(any_params):
  masks = sj.dense_masks(any_params)
  paths = [p for p, _ in tree_lib.leaves_with_paths(masks)]
  assert paths, 'no prunable leaf found'
  for path, leaf in tree_lib.leaves_with_paths(any_params):
    assert (path in paths) == (leaf.ndim >= 2), path
  assert not any('bias' in p or 'scale' in p for p in paths)


def test_nnx_paths_drop_value_suffix():
  paths = tree_lib.prunable_paths(nnx_state())
  assert paths == ['l1/kernel', 'l2/kernel']


def test_rule_include_exclude():
  params = dict_params()
  rule = sj.PrunableRule(exclude='head')
  assert tree_lib.prunable_paths(params, rule) == ['encoder/w1', 'encoder/w2']
  rule = sj.PrunableRule(include=r'w1|b1')
  assert tree_lib.prunable_paths(params, rule) == ['encoder/b1', 'encoder/w1']


def test_counts_density_and_sparsity(any_params):
  _, masks = sj.prune(any_params, 0.75)
  totals = masks_lib.count_total(masks)
  for path, count in sj.count_active(masks).items():
    assert int(count) == totals[path] - round(0.75 * totals[path]), path
  dens = sj.layer_density(masks)
  spars = masks_lib.layer_sparsity(masks)
  for path in dens:
    np.testing.assert_allclose(float(dens[path]) + float(spars[path]), 1.0, rtol=1e-6)
  expected = sum(int(c) for c in sj.count_active(masks).values()) / sum(totals.values())
  np.testing.assert_allclose(float(sj.overall_density(masks)), expected, rtol=1e-6)
  np.testing.assert_allclose(float(sj.overall_sparsity(masks)), 1 - expected, rtol=1e-6)
  assert int(sj.total_active(masks)) == sum(int(c) for c in sj.count_active(masks).values())


def test_apply_masks_zeroes_exactly(any_params):
  pruned, masks = sj.prune(any_params, 0.5)
  for p, m in zip(jax.tree.leaves(pruned), jax.tree.leaves(masks, is_leaf=lambda x: x is None)):
    if m is not None:
      assert np.all(np.asarray(p)[~np.asarray(m)] == 0.0)


def test_masks_from_zeros_roundtrip(any_params):
  pruned, masks = sj.prune(any_params, 0.6)
  again = sj.masks_from_zeros(pruned)
  for a, b in zip(jax.tree.leaves(masks), jax.tree.leaves(again)):
    np.testing.assert_array_equal(a, b)


def test_overlap_by_hand():
  a = {'w': jnp.array([[1, 1, 0, 0]], bool), 'b': None}
  b = {'w': jnp.array([[1, 0, 1, 0]], bool), 'b': None}
  o = sj.overlap(a, b)
  assert int(o['w']['intersection']) == 1
  np.testing.assert_allclose(float(o['w']['iou']), 1 / 3)
  np.testing.assert_allclose(float(o['total']['recall']), 1 / 2)


def test_validate_masks_errors():
  params = dict_params()
  masks = sj.dense_masks(params)
  bad_shape = jax.tree.map(lambda m: m, masks)
  bad_shape['encoder']['w2'] = jnp.ones((3, 3), bool)
  with pytest.raises(ValueError, match='encoder/w2'):
    sj.validate_masks(bad_shape, params)
  missing = {'encoder': dict(masks['encoder']), 'head': {'w': masks['head']['w']}}
  with pytest.raises(ValueError, match='head/scale'):
    sj.validate_masks(missing, params)
  extra = jax.tree.map(lambda m: m, masks)
  extra['head']['extra'] = jnp.ones((2,), bool)
  with pytest.raises(ValueError, match='head/extra'):
    sj.validate_masks(extra, params)
  floaty = jax.tree.map(lambda m: m, masks)
  floaty['head']['w'] = jnp.ones((12, 4), jnp.float32)
  with pytest.raises(ValueError, match='head/w.*dtype'):
    sj.validate_masks(floaty, params)


def test_non_float_leaf_marked_prunable():
  params = {'w': jnp.ones((4, 4)), 'idx': jnp.ones((4, 4), jnp.int32)}
  with pytest.raises(ValueError, match="'idx'.*int32"):
    sj.dense_masks(params, sj.PrunableRule(include='idx|w'))
  # The default rule skips integer leaves silently.
  assert tree_lib.prunable_paths(params) == ['w']


def test_bad_regex_named():
  with pytest.raises(ValueError, match='include'):
    sj.PrunableRule(include='(')


def test_linen_and_dict_same_counts():
  for params in (linen_params(), dict_params(), nnx_state()):
    _, masks = sj.prune(params, 0.9)
    for path, c in sj.count_active(masks).items():
      n = masks_lib.count_total(masks)[path]
      assert int(c) == max(1, n - round(0.9 * n)), path


def test_mask_dynamics_hand_made():
  initial = {'a': jnp.array([[1, 1, 0], [0, 0, 0]], bool), 'b': None,
             'c': jnp.array([1, 0, 0, 0], bool)}
  previous = {'a': jnp.array([[1, 0, 1], [0, 0, 0]], bool), 'b': None,
              'c': jnp.array([1, 1, 0, 0], bool)}
  new = {'a': jnp.array([[1, 0, 0], [1, 1, 0]], bool), 'b': None,
         'c': jnp.array([0, 1, 0, 1], bool)}
  # a: dropped {0,2}, grown {(1,0),(1,1)}, new&prev {(0,0)}, new&init {(0,0)}
  # c: dropped {0}, grown {3}, new&prev {1}, new&init {}
  for fn in (masks_lib.mask_dynamics, jax.jit(masks_lib.mask_dynamics)):
    d = fn(previous, new, initial)
    assert set(d) == {'dropped', 'grown', 'active', 'overlap_previous', 'overlap_initial'}
    assert d['dropped'].dtype == jnp.int32 and d['overlap_previous'].dtype == jnp.float32
    assert (int(d['dropped']), int(d['grown']), int(d['active'])) == (2, 3, 5)
    assert float(d['overlap_previous']) == np.float32(2) / np.float32(5)
    assert float(d['overlap_initial']) == np.float32(1) / np.float32(5)
  empty = {'a': jnp.zeros((2, 3), bool), 'b': None, 'c': jnp.zeros((4,), bool)}
  d = masks_lib.mask_dynamics(empty, empty, empty)
  assert int(d['active']) == 0 and float(d['overlap_previous']) == 0.0
