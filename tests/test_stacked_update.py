"""Same-shaped leaves share one compiled update body (`core.stacked`), and the
masks are the ones a loop over the leaves gives, bit for bit, ties included."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparsejax as sj
from sparsejax.core import dynamic, stacked
from sparsejax.core import tree as tree_lib


SHAPES = {'a': (32, 16), 'b': (32, 16), 'c': (32, 16), 'd': (16, 16), 'e': (16, 16),
          'f': (16, 8)}          # groups of 3, 2 and 1 kernels
SMALL = {'a': (16, 8), 'b': (16, 8), 'c': (8, 8)}   # a group of 2 and a single kernel


def _params(tied: bool, shapes=SHAPES):
  """Kernels of `shapes`, each with a bias."""
  rng = np.random.RandomState(0)
  params = {}
  for name, shape in shapes.items():
    w = rng.randn(*shape).astype(np.float32)
    if tied:     # few distinct values: the selection must break ties as the loop does
      w = np.round(w * 2) / 2
    params[name] = {'kernel': jnp.asarray(w), 'bias': jnp.zeros(shape[-1])}
  return params


def _loop_update(schedule, masks, params, grads, step):
  """The update as a Python loop over the leaves (the code before stacking)."""
  d = schedule.drop_fraction_at(step)
  drop = dict(tree_lib.leaves_with_paths(params))
  grow = schedule.grow_scores(params, grads, step)
  fn = dynamic.pattern_drop_grow(schedule.pattern)
  return tree_lib.map_with_path(lambda path, m: fn(m, jnp.abs(drop[path]), grow[path], d), masks)


# The two bodies (gradient growth, hashed random growth) in the default suite;
# the pattern variants, which reuse the gradient body's code path, in extended.
CASES = [('rigl', {}), ('set', {}),
         pytest.param('rigl', {'pattern': sj.NM(2, 4)}, marks=pytest.mark.extended),
         pytest.param('set', {'pattern': sj.Block((4, 2))}, marks=pytest.mark.extended)]


@pytest.mark.parametrize('name, kw', CASES)
def test_stacked_update_equals_the_loop(name, kw):
  schedule = sj.make_schedule(name, sparsity=0.5, every=10, end=100, drop_fraction=0.5, **kw)
  params = _params(tied=True, shapes=SMALL)
  grads = jax.tree.map(lambda p: jnp.round(jax.random.normal(jax.random.key(1), p.shape) * 2),
                       params)
  masks, state = schedule.init(params)
  step = jnp.int32(10)
  new, _ = jax.jit(schedule.update)(masks, params, grads, step, state)
  ref = jax.jit(lambda m, p, g, s: _loop_update(schedule, m, p, g, s))(masks, params, grads, step)
  for (path, a), b in zip(tree_lib.leaves_with_paths(new), jax.tree.leaves(ref)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=path)
  changed = sum(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(new),
                                                          jax.tree.leaves(masks)))
  assert changed >= 2          # the update moved masks, so the comparison means something


def test_one_body_per_shape_group():
  """The update maps one body (a scan) over each group of >= 2 same-shaped leaves;
  the single 16x8 kernel runs on its own."""
  schedule = sj.make_schedule('rigl', sparsity=0.5, every=10, end=100)
  params = _params(False)
  masks, state = schedule.init(params)
  jaxpr = jax.make_jaxpr(schedule.update)(masks, params, params, jnp.int32(10), state)
  shapes = sorted({tuple(v.aval.shape) for e in jaxpr.jaxpr.eqns if e.primitive.name == 'scan'
                   for v in e.invars if v.aval.ndim == 3})
  assert shapes == [(2, 16, 16), (3, 32, 16)]   # the two 16x16 and the three 32x16 kernels


def test_map_stacked_groups_by_shape_and_dtype():
  calls = {'x': (jnp.ones((2, 3)),), 'y': (2 * jnp.ones((2, 3)),),
           'z': (jnp.ones((2, 3), jnp.int32),), 'w': (jnp.ones(4),)}
  out = stacked.map_stacked(lambda a: (a * 3, a.sum()), calls)
  for name, (a,) in calls.items():
    np.testing.assert_array_equal(out[name][0], a * 3)
    assert out[name][0].dtype == a.dtype
    np.testing.assert_array_equal(out[name][1], a.sum())
