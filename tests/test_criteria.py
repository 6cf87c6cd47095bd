"""Criteria against hand-computed values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparsejax as sj
from sparsejax.core import criteria

W = {'a': jnp.array([[1.0, -2.0], [3.0, -0.5]]), 'b': jnp.array([0.5, -1.0])}
G = {'a': jnp.array([[0.1, 0.2], [-0.3, 4.0]]), 'b': jnp.array([1.0, 1.0])}


def test_elementwise_criteria_by_hand():
  w, g = np.asarray(W['a']), np.asarray(G['a'])
  np.testing.assert_allclose(criteria.magnitude(W)['a'], np.abs(w))
  np.testing.assert_allclose(criteria.gradient(W, G)['a'], np.abs(g))
  np.testing.assert_allclose(criteria.snip(W, G)['a'], np.abs(w * g))
  np.testing.assert_allclose(criteria.taylor(W, G)['a'], (w * g) ** 2)
  np.testing.assert_allclose(criteria.movement(W, G)['a'], -w * g)


def test_random_is_seeded_by_fold_in():
  key = jax.random.key(3)
  r1, r2 = criteria.random(W, None, key), criteria.random(W, None, key)
  np.testing.assert_array_equal(r1['a'], r2['a'])
  expected = jax.random.uniform(jax.random.fold_in(key, 0), (2, 2))
  np.testing.assert_array_equal(r1['a'], expected)
  r3 = criteria.random(W, None, jax.random.key(4))
  assert not np.array_equal(r1['a'], r3['a'])
  with pytest.raises(ValueError, match='key'):
    criteria.random(W)


def test_gradient_criteria_need_grads():
  for name in ('gradient', 'snip', 'taylor', 'movement'):
    with pytest.raises(ValueError, match=name):
      sj.get_criterion(name)(W)


def test_unknown_criterion_named():
  with pytest.raises(ValueError, match="'hessian'"):
    sj.get_criterion('hessian')


def test_snip_scores_from_loss():
  loss = lambda p, b: jnp.sum(p['a'] * b) ** 2 + jnp.sum(p['b'])
  batch = jnp.array([[1.0, 2.0], [0.0, 1.0]])
  s = criteria.snip_scores(loss, W, batch)
  inner = float(jnp.sum(W['a'] * batch))
  np.testing.assert_allclose(s['a'], np.abs(np.asarray(W['a']) * 2 * inner * np.asarray(batch)),
                             rtol=1e-6)


def test_grasp_quadratic_by_hand():
  # L(w) = 0.5 w^T A w - b^T w: g = A w - b, H = A, so Hg = A (A w - b).
  A = np.array([[2.0, 0.5], [0.5, 1.0]], np.float32)
  bvec = np.array([1.0, -1.0], np.float32)
  w = np.array([0.3, -0.7], np.float32)
  loss = lambda p, batch: 0.5 * p['w'] @ (batch[0] @ p['w']) - batch[1] @ p['w']
  s = criteria.grasp_scores(loss, {'w': jnp.asarray(w)}, (jnp.asarray(A), jnp.asarray(bvec)))
  np.testing.assert_allclose(s['w'], w * (A @ (A @ w - bvec)), rtol=1e-5)


def test_synflow_two_linear_layers_by_hand():
  w1 = np.array([[1.0, -2.0], [0.5, 1.0], [-1.0, 0.0]], np.float32)   # 3 -> 2
  w2 = np.array([[2.0], [-3.0]], np.float32)                          # 2 -> 1
  apply = lambda p, x: x @ p['w1'] @ p['w2']
  s = criteria.synflow_scores(apply, {'w1': jnp.asarray(w1), 'w2': jnp.asarray(w2)}, (1, 3))
  a1, a2 = np.abs(w1), np.abs(w2)
  np.testing.assert_allclose(s['w1'], a1 * a2[:, 0][None, :], rtol=1e-6)
  np.testing.assert_allclose(s['w2'], a2 * a1.sum(0)[:, None], rtol=1e-6)
