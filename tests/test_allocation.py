"""Per-layer allocation: uniform, global, ER, ERK, overrides, minimum one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparsejax as sj
from sparsejax.core import allocation as alloc_lib
from sparsejax.core import masks as masks_lib

LENET = {'fc1': (784, 300), 'fc2': (300, 100), 'out': (100, 10)}


def test_erk_hand_computed_with_dense_cap():
  # raw densities 20/100 = 0.2 and 200/10000 = 0.02; eps = 5050/220 makes the
  # small layer exceed 1, so it goes dense and the big one keeps 4950 / 10000.
  got = alloc_lib.erk_sparsities({'small': (10, 10), 'big': (100, 100)}, 0.5)
  assert got['small'] == 0.0
  np.testing.assert_allclose(got['big'], 1 - 4950 / 10000)


@pytest.mark.parametrize('sparsity', [0.5, 0.8, 0.9, 0.95, 0.99])
def test_erk_matches_formula_on_lenet(sparsity):
  got = alloc_lib.erk_sparsities(LENET, sparsity)
  sizes = {k: np.prod(s) for k, s in LENET.items()}
  raw = {k: sum(s) / np.prod(s) for k, s in LENET.items()}
  kept = sum((1 - got[k]) * sizes[k] for k in LENET)
  np.testing.assert_allclose(kept, (1 - sparsity) * sum(sizes.values()), rtol=1e-9)
  sparse = [k for k in LENET if got[k] > 0]
  eps = {(1 - got[k]) / raw[k] for k in sparse}
  np.testing.assert_allclose(min(eps), max(eps), rtol=1e-9)    # one common scale
  for k in LENET:
    if got[k] == 0:
      assert max(eps) * raw[k] >= 1 - 1e-9                      # capped layers only


def test_er_uses_fan_in_and_out_only():
  shapes = {'conv': (3, 3, 16, 32), 'dense': (512, 10)}
  er = alloc_lib.erk_sparsities(shapes, 0.9, kernel=False)
  erk = alloc_lib.erk_sparsities(shapes, 0.9, kernel=True)
  ratio_er = (1 - er['conv']) / (1 - er['dense'])
  np.testing.assert_allclose(ratio_er, ((16 + 32) / (16 * 32)) / ((512 + 10) / 5120), rtol=1e-9)
  ratio_erk = (1 - erk['conv']) / (1 - erk['dense'])
  np.testing.assert_allclose(
      ratio_erk, ((3 + 3 + 16 + 32) / (9 * 16 * 32)) / ((512 + 10) / 5120), rtol=1e-9)


def test_overrides_and_scales():
  a = sj.Allocation('uniform', overrides={'fc1': 0.0}, scales={'out': 0.5})
  got = a.layer_sparsities(LENET, 0.8)
  assert got == {'fc1': 0.0, 'fc2': 0.8, 'out': 0.4}
  erk = sj.Allocation('erk', overrides={'fc1': 0.0}).layer_sparsities(LENET, 0.9)
  assert erk['fc1'] == 0.0
  g = sj.Allocation('global', scales={'out': 0.5}).layer_sparsities(LENET, 0.9)
  assert g == {'fc1': None, 'fc2': None, 'out': 0.45}


@pytest.mark.parametrize('bad', [1.0, -0.1, float('nan'), 'abc', None])
def test_sparsity_out_of_range_named(bad):
  with pytest.raises(ValueError, match='sparsity'):
    sj.Allocation().layer_sparsities(LENET, bad)
  with pytest.raises(ValueError, match=r'\[0, 1\)'):
    sj.make_schedule('oneshot', sparsity=bad)


def test_override_out_of_range_and_unknown_method():
  with pytest.raises(ValueError, match="'fc1'"):
    sj.Allocation(overrides={'fc1': 1.5})
  with pytest.raises(ValueError, match="'sorted'"):
    sj.Allocation('sorted')


def _lenet_params(seed=0):
  keys = jax.random.split(jax.random.key(seed), 3)
  return {k: jax.random.normal(key, s) for (k, s), key in zip(LENET.items(), keys)}


def test_global_one_threshold_exact_total():
  params = _lenet_params()
  params['out'] = params['out'] * 1e-3   # would lose every weight to a pure global cut
  _, masks = sj.prune(params, 0.95, allocation='global')
  n = sum(int(np.prod(s)) for s in LENET.values())
  assert int(sj.total_active(masks)) == n - round(0.95 * n)
  assert int(sj.count_active(masks)['out']) >= 1
  kept_min = min(float(jnp.min(jnp.where(masks[k], jnp.abs(params[k]), jnp.inf)))
                 for k in ('fc1', 'fc2'))
  pruned_max = max(float(jnp.max(jnp.where(masks[k], -jnp.inf, jnp.abs(params[k]))))
                   for k in LENET)
  assert kept_min >= pruned_max


@pytest.mark.parametrize('sparsity', [0.99, 0.999])
@pytest.mark.parametrize('method', ['uniform', 'erk', 'global'])
def test_extreme_sparsity_leaves_no_empty_layer(sparsity, method):
  _, masks = sj.prune(_lenet_params(), sparsity, allocation=method)
  for path, count in sj.count_active(masks).items():
    assert int(count) >= 1, path


def test_sparsity_zero_is_dense_exactly():
  params = _lenet_params()
  pruned, masks = sj.prune(params, 0.0)
  for path, count in sj.count_active(masks).items():
    assert int(count) == masks_lib.count_total(masks)[path]
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(pruned)):
    np.testing.assert_array_equal(a, b)
